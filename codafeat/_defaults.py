"""Every default value of codafeat, decided once (timm's ``default_cfgs`` idea).

Estimator signatures, the views, the networks and the command line read their defaults
from here, so that changing one (say the input side) is one edit. The source of each value
is named: **paper** (Coda, MICCAI 2025), **DINO** (Caron et al. 2021, ``main_dino.py``,
where the paper is silent), **timm** (ImageNet statistics) or **ours**. This module
imports nothing heavy: ``codafeat --help`` reads it without torch.

Examples
--------
>>> from codafeat import _defaults, CodaPretrainer
>>> CodaPretrainer().image_size == _defaults.IMAGE_SIZE == PRETRAIN["image_size"]
True
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: Backbone of every estimator without weights (paper: ConvNeXt-B).
BACKBONE = "convnext_base"
#: Side of the global views and of the encoder's input (paper).
IMAGE_SIZE = 224
#: Side of the local crops (paper).
LOCAL_SIZE = 96
#: Local crops per image (paper: N = 12).
N_LOCAL_CROPS = 12
#: Area ranges of the global (DINO) and local (paper) random resized crops.
GLOBAL_SCALE = (0.4, 1.0)
LOCAL_SCALE = (0.4, 0.7)
#: Maximum rotation of every view, in degrees (paper: "rotation"; range ours).
ROTATION = 10.0
#: Intensity jitter of every view (DINO's colour jitter, for one channel): contrast and
#: brightness factors in [1 - c, 1 + c], a gamma range, applied with probability JITTER_PROB.
BRIGHTNESS = 0.4
CONTRAST = 0.4
GAMMA = (0.8, 1.2)
JITTER_PROB = 0.8
#: Gaussian blur probabilities of the views g1, g2 and the local crops, and the sigma range
#: as a fraction of the view side (DINO: 1.0, 0.1, 0.5; sigma 0.1-2.0 at 224 px).
BLUR_PROB = (1.0, 0.1, 0.5)
BLUR_SIGMA = (0.1, 2.0)
#: Backbone input normalisation when no weights say otherwise (timm's ImageNet values).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Largest input side any estimator or weights file accepts (ours; far above any radiograph model).
MAX_IMAGE_SIZE = 4096
#: Fewest local crops per image (the intra-organ term needs at least one).
MIN_LOCAL_CROPS = 1
#: DINO head sizes: outputs (paper: 65,536), hidden width (paper: 2,048), bottleneck (DINO: 256).
HEAD_OUT_DIM = 65536
HEAD_HIDDEN_DIM = 2048
HEAD_BOTTLENECK_DIM = 256
#: Global pooling of the backbone's last feature map when no weights say otherwise (timm's).
POOLING = "avg"
#: What an encoder's ``transform`` returns when no weights say otherwise: the pooled last stage.
FEATURES = "pooled"
#: The layouts ``transform`` offers (codafeat.nn.backbone.FeatureExtractor).
FEATURE_KINDS = ("pooled", "stages", "grid")
#: Side of the spatial grid of ``features="grid"`` when no weights say otherwise.
GRID_SIZE = 2


class PretrainParam(NamedTuple):
    """One row of :data:`PRETRAIN_PARAMS`: everything decided about a ``CodaPretrainer`` parameter.

    ``accepts`` is plain data (no sklearn here) that :func:`codafeat._estimator.params.constraints`
    turns into scikit-learn's ``_parameter_constraints`` entry: type tokens (``"int"``,
    ``"str"``, ``"bool"``, ``"none"``, ``"path"``, ``"seq"``, ``"dict"``, ``"weights"``,
    ``"device"``, ``"random_state"``, ``"verbose"``, ``"image_side"``, ``"bit_depth"``,
    ``"on_error"``) and ranges ``("int", low, high)``, ``("real", low, high, closed)``,
    ``("options", name, ...)``.
    """

    default: Any
    accepts: tuple
    #: May change between a checkpoint and the run that resumes it: it only says where and how
    #: a run executes (or, for ``init_weights``, matters only before the first step).
    run_only: bool = False
    #: Offered by ``codafeat pretrain`` as ``--<name>`` (with this default).
    cli: bool = True


def _p(default: Any, *accepts: Any, run_only: bool = False, cli: bool = True) -> PretrainParam:
    return PretrainParam(default, tuple(accepts), run_only, cli)


_REAL_01 = ("real", 0, 1, "both")
_HUGE = 1_000_000
_TEMP = ("real", 1e-4, 100, "both")
_WEIGHT = ("real", 0, 1000, "both")

#: Every CodaPretrainer parameter, one row each: default, what it accepts, whether it may change
#: on resume, and whether the command line offers it. The estimator's signature and docstring,
#: its ``_parameter_constraints``, the resume check and ``codafeat pretrain``'s options all come
#: from here (``tests/test_defaults.py`` checks the signature and the docstring against it).
#: The docstring gives the source of each default.
PRETRAIN_PARAMS: dict[str, PretrainParam] = {
    "backbone": _p(BACKBONE, "str"),
    "init_weights": _p(None, "none", "str", "path", "weights", run_only=True),
    "image_size": _p(IMAGE_SIZE, "image_side"),
    "local_size": _p(LOCAL_SIZE, "image_side"),
    "n_local_crops": _p(N_LOCAL_CROPS, ("int", MIN_LOCAL_CROPS, 64)),
    "global_scale": _p(GLOBAL_SCALE, "seq"),
    "local_scale": _p(LOCAL_SCALE, "seq"),
    "rotation": _p(ROTATION, ("real", 0, 180, "both")),
    "hflip": _p(False, "bool"),
    "brightness": _p(BRIGHTNESS, ("real", 0, 1, "left")),
    "contrast": _p(CONTRAST, ("real", 0, 1, "left")),
    "gamma": _p(GAMMA, "seq"),
    "jitter_prob": _p(JITTER_PROB, _REAL_01),
    "blur_prob": _p(BLUR_PROB, _REAL_01, "seq"),
    "blur_sigma": _p(BLUR_SIGMA, "seq"),
    "symmetric": _p(True, "bool"),
    "drop_path_rate": _p(0.1, ("real", 0, 1, "left")),
    "epochs": _p(800, ("int", 1, _HUGE)),
    "batch_size": _p(64, ("int", 2, _HUGE)),
    "lr": _p(1.25e-4, ("real", 0, 1, "right")),
    "min_lr": _p(1e-6, _REAL_01),
    "warmup_epochs": _p(10, ("int", 0, _HUGE)),
    "weight_decay": _p(0.04, ("real", 0, 10, "both")),
    "weight_decay_end": _p(0.4, ("real", 0, 10, "both")),
    "momentum_teacher": _p(0.996, _REAL_01),
    "head_out_dim": _p(HEAD_OUT_DIM, ("int", 2, 2**20)),
    "head_hidden_dim": _p(HEAD_HIDDEN_DIM, ("int", 1, 2**16)),
    "head_bottleneck_dim": _p(HEAD_BOTTLENECK_DIM, ("int", 1, 2**16)),
    "temperature": _p(0.1, _TEMP),
    "denominator": _p("negatives", ("options", "negatives", "all")),
    "student_temp": _p(0.1, _TEMP),
    "teacher_temp": _p(0.04, _TEMP),
    "warmup_teacher_temp": _p(0.04, _TEMP),
    "warmup_teacher_temp_epochs": _p(0, ("int", 0, _HUGE)),
    "center_momentum": _p(0.9, _REAL_01),
    "lambda_inter": _p(1.0, _WEIGHT),
    "lambda_intra": _p(1.0, _WEIGHT),
    "koleo_weight": _p(0.0, _WEIGHT),
    "clip_grad": _p(3.0, ("real", 0, 1e6, "both")),
    "freeze_last_layer": _p(1, ("int", 0, _HUGE)),
    "accumulate_steps": _p(1, ("int", 1, 1024)),
    "head_fp32": _p(False, "bool"),
    "compile": _p(False, "bool", "str", run_only=True),
    "device": _p("auto", "device", run_only=True),
    "num_workers": _p(0, ("int", 0, 1024), run_only=True),
    "cache_dir": _p(None, "none", "str", "path", run_only=True),
    "checkpoint_dir": _p(None, "none", "str", "path", run_only=True),
    "checkpoint_every": _p(1, ("int", 1, _HUGE), run_only=True),
    "resume": _p(False, "bool", run_only=True),
    "organ_from": _p("folder", ("options", "folder", "dicom"), run_only=True),
    "organ_map": _p(None, "none", "dict", "str", "path", run_only=True),
    "bit_depth": _p(None, "bit_depth"),
    "on_error": _p("raise", "on_error", run_only=True),
    "monitor_every": _p(1, ("int", 0, _HUGE), run_only=True),
    "monitor_fraction": _p(0.05, ("real", 0, 0.5, "left")),
    "log_dir": _p(None, "none", "str", "path", run_only=True),
    "random_state": _p(None, "random_state", run_only=True),
    "verbose": _p(0, "verbose", run_only=True, cli=False),  # the command has its own --verbose (default 1)
}

#: CodaPretrainer's defaults (from :data:`PRETRAIN_PARAMS`).
PRETRAIN: dict[str, Any] = {name: row.default for name, row in PRETRAIN_PARAMS.items()}

#: CodaPretrainer parameters that may change between a checkpoint and the run that resumes it
#: (from :data:`PRETRAIN_PARAMS`); every other parameter must agree.
PRETRAIN_RUN_ONLY = frozenset(name for name, row in PRETRAIN_PARAMS.items() if row.run_only)

#: Decoder widths of the U-Net at strides 16, 8, 4, 2, 1 (ours).
DECODER_CHANNELS = (256, 128, 64, 32, 16)
