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

from typing import Any

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
#: Largest input side any estimator accepts (ours; far above any radiograph model).
MAX_IMAGE_SIZE = 4096

#: CodaPretrainer's defaults; its docstring gives the source of each.
PRETRAIN: dict[str, Any] = {
    "backbone": BACKBONE,
    "init_weights": None,
    "image_size": IMAGE_SIZE,
    "local_size": LOCAL_SIZE,
    "n_local_crops": N_LOCAL_CROPS,
    "global_scale": GLOBAL_SCALE,
    "local_scale": LOCAL_SCALE,
    "rotation": ROTATION,
    "hflip": False,
    "brightness": BRIGHTNESS,
    "contrast": CONTRAST,
    "gamma": GAMMA,
    "jitter_prob": JITTER_PROB,
    "blur_prob": BLUR_PROB,
    "blur_sigma": BLUR_SIGMA,
    "symmetric": True,
    "drop_path_rate": 0.1,
    "epochs": 800,
    "batch_size": 64,
    "lr": 1.25e-4,
    "min_lr": 1e-6,
    "warmup_epochs": 10,
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,
    "momentum_teacher": 0.996,
    "head_out_dim": 65536,
    "head_hidden_dim": 2048,
    "head_bottleneck_dim": 256,
    "temperature": 0.1,
    "denominator": "negatives",
    "student_temp": 0.1,
    "teacher_temp": 0.04,
    "warmup_teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 0,
    "center_momentum": 0.9,
    "lambda_inter": 1.0,
    "lambda_intra": 1.0,
    "koleo_weight": 0.0,
    "clip_grad": 3.0,
    "freeze_last_layer": 1,
    "accumulate_steps": 1,
    "head_fp32": False,
    "compile": False,
    "device": "auto",
    "num_workers": 0,
    "cache_dir": None,
    "checkpoint_dir": None,
    "checkpoint_every": 1,
    "resume": False,
    "organ_from": "folder",
    "organ_map": None,
    "bit_depth": None,
    "on_error": "raise",
    "monitor_every": 1,
    "monitor_fraction": 0.05,
    "log_dir": None,
    "random_state": None,
    "verbose": 0,
}

#: CodaPretrainer parameters that only say where and how a run executes (or, for
#: ``init_weights``, matter only before the first step: a resumed run restores the
#: checkpoint's networks): they may change between a checkpoint and the run that resumes
#: it. Every other parameter must agree.
PRETRAIN_RUN_ONLY = frozenset(
    {
        "init_weights",
        "compile",
        "device",
        "num_workers",
        "cache_dir",
        "checkpoint_dir",
        "checkpoint_every",
        "resume",
        "organ_from",
        "organ_map",
        "on_error",
        "monitor_every",
        "log_dir",
        "random_state",
        "verbose",
    }
)

#: Decoder widths of the U-Net at strides 16, 8, 4, 2, 1 (ours).
DECODER_CHANNELS = (256, 128, 64, 32, 16)
