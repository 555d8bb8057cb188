"""CodaPretrainer: Coda teacher-student pretraining as a scikit-learn estimator.

(Why one module of more than 500 lines: scikit-learn's conventions want every one of
the 57 parameters documented in the class docstring, listed in ``_parameter_constraints``
and stored by an explicit keyword-only ``__init__``. That is about 300 lines of
declaration. The training machinery itself lives in :mod:`codafeat._train`.)

``fit`` validates the input, builds the decoded-image cache, the student/teacher
networks and losses, runs the training loop (:mod:`codafeat._train.loop`), and emits a
:class:`~codafeat.CodaEncoder` built on the EMA teacher.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils.validation import check_is_fitted
from torch.utils.data import DataLoader

from ._defaults import MEAN, PRETRAIN, PRETRAIN_PARAMS, PRETRAIN_RUN_ONLY, STD
from ._device import DevicePolicy, denormals_flushed, resolve_device
from ._fileio import check_free_space, check_writable
from ._params import constraints, draw_seed
from ._persist import TorchStateMixin
from ._train import dist as D
from ._train import resume
from ._train.checkpoint import remove_stale
from ._train.loop import CodaTrainer, Schedules
from ._train.monitor import TrainingMonitor, monitor_split
from ._train.objective import Terms
from ._train.pretraining import (
    CheckpointCallback,
    MetricsSinkCallback,
    MonitorCallback,
    ReportCallback,
    fit_pretraining,
)
from ._train.sampling import GlobalBatchSampler
from ._train.schedules import cosine_schedule, teacher_temp_schedule
from .data.cache.decoded import DecodedCache, cache_size_for
from .data.io import report_skipped
from .data.loader import worker_context
from .data.organs import collect_organ_images
from .data.pretrain_dataset import MultiCropDataset, collate_views
from .data.summary import training_data_summary
from .data.views import MultiCropViews
from .encoder import CodaEncoder
from .formats.timm import load_any
from .formats.weights import Weights, make_config
from .losses.inter_organ import InterOrganLoss
from .losses.intra_organ import IntraOrganLoss
from .nn.backbone import check_input_size, embed_dim, load_backbone_state
from .nn.coda_model import CodaNetwork
from .nn.ema import make_teacher

logger = logging.getLogger(__name__)

#: Parameters that must agree between a checkpoint and the run that resumes it: all but
#: those that only say where and how the run executes.
RESUME_KEYS = tuple(k for k in PRETRAIN if k not in PRETRAIN_RUN_ONLY)

#: The defaults of every parameter (codafeat._defaults).
P = PRETRAIN


class CodaPretrainer(TorchStateMixin, BaseEstimator):
    """Pretrain a Coda foundation model on radiographs of several organs.

    Coda (Hosseinzadeh Taher et al., MICCAI 2025) trains a student and an EMA teacher
    ConvNeXt with two branches that share the backbones: an **inter-organ** supervised
    contrastive loss over organ labels (paper Eq. 1) and an **intra-organ** DINO-style
    self-distillation from the teacher's global view to the student's local crops (Eq. 2).
    The teacher is exported as the encoder.

    Defaults are the paper's where it states them (backbone, batch, lr, epochs, input,
    crops, head sizes) and DINO's (Caron et al. 2021, ``main_dino.py``) where it is silent;
    each parameter says which.

    Parameters
    ----------
    backbone : str, default="convnext_base"
        timm model (paper: ConvNeXt-B).
    init_weights : str, path, Weights or None, default=None
        Warm start: backbone weights that student and teacher start from, for continued
        pretraining on new organs or sites. It may be a codafeat file, an installed weights
        name, a timm / hub folder, or a plain timm safetensors checkpoint of ``backbone``
        (see :func:`codafeat.formats.timm.load_any`). The heads always start fresh. ``None``
        starts from timm's random initialisation. The source is recorded in the weights'
        training summary.
    image_size : int, default=224
        Side of the two global views (paper: 224).
    local_size : int, default=96
        Side of the local crops (paper: 96).
    n_local_crops : int, default=12
        Local crops per image (paper: N = 12).
    global_scale : tuple of float, default=(0.4, 1.0)
        Area range of the global random resized crops (DINO).
    local_scale : tuple of float, default=(0.4, 0.7)
        Area range of the local crops (paper).
    rotation : float, default=10.0
        Maximum rotation in degrees of every view (paper: "rotation"; range ours).
    hflip : bool, default=False
        Random horizontal flips. Off by default: left and right anatomy differ.
    brightness, contrast : float, default=0.4
        Intensity jitter of every view: factors drawn in ``[1 - v, 1 + v]`` (DINO's colour
        jitter, for one channel; see :class:`~codafeat.data.views.MultiCropViews`).
    gamma : tuple of float, default=(0.8, 1.2)
        Range of the random gamma of the intensity jitter (ours).
    jitter_prob : float, default=0.8
        Probability that a view is jittered at all (DINO). ``0`` turns the jitter off.
    blur_prob : float or tuple of 3 float, default=(1.0, 0.1, 0.5)
        Gaussian-blur probability of the views g1, g2 and the local crops (DINO); one value
        applies to all three.
    blur_sigma : tuple of float, default=(0.1, 2.0)
        Blur sigma range in pixels at 224 px, scaled with the view side (DINO).
    symmetric : bool, default=True
        Which reading of the paper's objective to train. ``False`` is Eq. 1-2 as printed:
        the teacher sees ``g2`` only, the student ``g1`` (always blurred, DINO's p = 1.0)
        and the local crops, so the student never gets a gradient from a sharp
        full-field view, which is what ``transform`` feeds the exported teacher.
        ``True`` is DINO's symmetric form (the paper's ref. [1], whose blur asymmetry
        assumes it): both global views pass through both networks; the inter-organ term
        averages student(g1) vs teacher(g2) and student(g2) vs teacher(g1), and the
        intra-organ term pairs every student view (g1, g2, crops) with both teacher views
        except a view with itself. The default follows the ablation in
        ``benchmarks/RESULTS.md``.
    drop_path_rate : float, default=0.1
        Stochastic depth of the student backbone (DINO's default; the paper is silent).
        The EMA teacher runs in eval mode and never drops paths.
    epochs : int, default=800
        Training epochs (paper).
    batch_size : int, default=64
        Global batch size (paper); under ``torchrun`` it is split over the processes.
    lr : float, default=1.25e-4
        Peak learning rate after warm-up, cosine-decayed to ``min_lr`` (paper: base lr
        1.25e-4 at batch 64; used as is, not rescaled by batch size).
    min_lr : float, default=1e-6
        Final learning rate (DINO).
    warmup_epochs : int, default=10
        Linear learning-rate warm-up (DINO); capped at ``epochs - 1`` with a warning.
    weight_decay, weight_decay_end : float, default=0.04, 0.4
        AdamW weight decay, cosine schedule from the first to the second (DINO); never
        applied to biases and normalisation parameters.
    momentum_teacher : float, default=0.996
        EMA momentum at the start, cosine-increased to 1 (DINO; DESIGN.md).
    head_out_dim, head_hidden_dim, head_bottleneck_dim : int, default=65536, 2048, 256
        Projection heads: 3-layer MLP with hidden 2048 (paper), bottleneck 256 (DINO),
        weight-normalised output layer with 65,536 outputs (paper).
    temperature : float, default=0.1
        Inter-organ contrastive temperature tau (SupCon, Khosla et al. 2020).
    denominator : {"negatives", "all"}, default="negatives"
        Inter-organ denominator: other-organ teacher embeddings only (paper Eq. 1) or all
        teacher embeddings (SupCon).
    student_temp : float, default=0.1
        Intra-organ student temperature (DINO).
    teacher_temp, warmup_teacher_temp : float, default=0.04, 0.04
        Intra-organ teacher temperature and its warm-up start (DINO).
    warmup_teacher_temp_epochs : int, default=0
        Teacher temperature warm-up (DINO).
    center_momentum : float, default=0.9
        Momentum of the teacher centre (DINO).
    lambda_inter, lambda_intra : float, default=1.0
        Loss weights; 0 removes a branch (the paper's Table 2 ablation).
    koleo_weight : float, default=0.0
        Weight of a KoLeo term (:class:`~codafeat.losses.KoLeoLoss`; DINOv2's spreading
        regulariser, not in the Coda paper, so off by default) on the student's
        intra-organ bottleneck vectors of each global view. It counters DINO's uniform
        collapse, where every image's bottleneck drifts to one direction and the teacher's
        targets become uniform. DINOv2 uses 0.1 on its backbone's class token; here it
        acts on the intra-organ head, where the ablation in ``benchmarks/RESULTS.md``
        ("Small-compute recipe") found it keeps the targets informative. Needs
        ``lambda_intra > 0`` and at least 2 images per process and accumulation part.
    clip_grad : float, default=3.0
        Per-parameter gradient-norm clipping (DINO); 0 disables.
    freeze_last_layer : int, default=1
        Epochs during which the heads' output layers are frozen (DINO).
    accumulate_steps : int, default=1
        Gradient accumulation: each process's share of the batch is run in this many parts
        whose gradients add up before one optimiser step, so that an effective batch of 64
        fits a small GPU. Each part's inter-organ term sees the negatives of its part only
        (``1/accumulate_steps`` of them); EMA and centre are updated once per step.
    head_fp32 : bool, default=False
        Run the heads' last layers (65,536 outputs) in float32 under GPU autocast.
    compile : bool or str, default=False
        ``torch.compile`` the student's and the teacher's forward passes (``True``: the
        default backend; a string names the backend, e.g. ``"eager"`` to test the wiring).
        Measured against eager in ``benchmarks/gpu_check.sh``.
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``. Under ``torchrun`` with CUDA each
        process uses ``cuda:LOCAL_RANK``.
    num_workers : int, default=0
        DataLoader workers producing the views.
    cache_dir : str or None, default=None
        Where the decoded, resized uint8 images are memory-mapped and reused across runs;
        ``None`` keeps them in memory for this fit.
    checkpoint_dir : str or None, default=None
        Where to write ``checkpoint.safetensors`` (atomically) every ``checkpoint_every``
        epochs.
    checkpoint_every : int, default=1
        Epochs between checkpoints.
    resume : bool, default=False
        Continue from the checkpoint in ``checkpoint_dir`` when there is one.
    organ_from : {"folder", "dicom"}, default="folder"
        Organ labels from the first-level subfolder (or ``y`` / the manifest), or from the
        DICOM headers: BodyPartExamined normalised to an organ name (``CHEST``, ``THORAX``,
        ``PORT CHEST`` and ``TORAX`` are all ``chest``), with StudyDescription,
        SeriesDescription and ProtocolName as fallback (see
        :mod:`codafeat.data.body_parts`). Files whose organ stays unknown raise, listing the
        unknown values, or are skipped with ``on_error="skip"``. The raw-to-organ table used
        is recorded in ``data_summary_`` and the model card.
    organ_map : dict, str, path or None, default=None
        With ``organ_from="dicom"``: the user's mapping, checked before the table:
        ``{raw value or organ: organ}``, or a CSV file with columns ``raw,organ``. Keys match
        whatever their case, spacing and punctuation.
    bit_depth : int or None, default=None
        Fixed bit depth of integer images of more than 8 bits, e.g. 12 or 14 for a
        detector's 16-bit containers: divide by ``2**bit_depth - 1`` instead of per-image
        min-max (see :mod:`codafeat.data.io`; per-image min-max stretches the noise of
        nearly empty images). It is recorded in the weights with the count of training
        images per intensity rule; the encoder applies the same rule and warns about inputs
        scaled otherwise.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable images: raise, or skip them (counted in ``history_`` and ``skipped_``).
    monitor_every : int, default=1
        Epochs between training-monitor measurements (0: never). The monitor embeds the
        held-out images with the teacher and records, in ``history_``, ``metrics.jsonl``,
        TensorBoard (when installed) and the progress bar: organ kNN accuracy and NMI,
        and the collapse indicators ``embed_std``, ``teacher_entropy`` (against
        ``ln_k``), ``teacher_mi`` and ``center_norm`` (see
        :mod:`codafeat._train.monitor`); a warning is logged when the run looks collapsed.
    monitor_fraction : float, default=0.05
        Stratified share of each organ's images held out of training for the monitor.
        The monitor is off (and every image trains) when that leaves an organ fewer than
        2 held-out images.
    log_dir : str or None, default=None
        Where ``metrics.jsonl`` (one JSON line per epoch) and TensorBoard events go;
        ``None``: ``checkpoint_dir`` (nothing is written when both are ``None``).
    random_state : int, RandomState or None, default=None
        Seeds initialisation, sampling and augmentation; makes CPU runs reproducible.
    verbose : int, default=0
        ``>= 1``: progress bar with the losses (rank 0 only).

    Attributes
    ----------
    encoder_ : CodaEncoder
        Fitted encoder on the EMA teacher's backbone.
    history_ : list of dict
        Per epoch: ``loss``, ``loss_inter``, ``loss_intra`` (and ``loss_koleo`` when
        ``koleo_weight > 0``), ``inter_skipped_steps`` (steps
        whose global batch held one organ), ``lr``, ``weight_decay``, ``momentum``,
        ``teacher_temp``, ``images_per_s``, ``seconds``, ``data_wait_share`` (the share of the
        epoch spent waiting for the DataLoader: near 1, training is data-bound; raise
        ``num_workers``), ``skipped_files``, and on monitor
        epochs the monitor's figures (see ``monitor_every``).
    init_weights_source_ : str
        Where the backbones started: ``"random"`` or the ``init_weights`` source.
    intensity_ : dict
        The intensity contract recorded in the weights: ``bit_depth`` and ``kinds`` (how
        many training images each rule of :mod:`codafeat.data.io` scaled).
    data_summary_ : dict
        What the model card records about the data: ``organs`` (name -> count),
        ``n_images``, ``n_train_images``, ``files_sha256`` (of the sorted relative paths;
        ``None`` for in-memory images) and, for DICOM files, ``dicom_manufacturers`` and
        ``dicom_body_parts``; with ``organ_from="dicom"`` also ``dicom_organ_map``: one row
        per raw BodyPartExamined value (``raw``, ``organ``, ``source``, ``count``).
    seed_ : int
        The run's seed (drawn from ``random_state``, broadcast from rank 0 under
        ``torchrun``, or read from the checkpoint when resuming with ``random_state=None``).
    monitor_indices_ : ndarray of int
        Positions (among the readable images) held out for the monitor; empty when off.
    organs_ : ndarray of str
        The organ names, in label order.
    n_images_ : int
        Training images used.
    skipped_ : list of str
        Images that could not be read (``on_error="skip"``).
    teacher_, student_ : torch.nn.Module
        The trained networks with their heads (CPU).

    Examples
    --------
    A one-epoch run of a tiny backbone on phantom radiographs of two organs (seconds on a
    CPU; a real run uses a folder, ``fit("radiographs/")``, with one subfolder per organ):

    >>> from codafeat import CodaPretrainer, make_radiograph_phantoms
    >>> X, organs = make_radiograph_phantoms(8, organs=("chest", "hand"), image_size=48,
    ...                                      random_state=0, return_variants=False)
    >>> pre = CodaPretrainer(backbone="test_convnext", image_size=32, local_size=32, n_local_crops=2,
    ...                      epochs=1, batch_size=8, head_out_dim=64, head_hidden_dim=32,
    ...                      head_bottleneck_dim=16, monitor_every=0, random_state=0)
    >>> encoder = pre.fit(X, organs).encoder_
    >>> encoder.transform(X[:3]).shape
    (3, 64)
    """

    # Bounds are generous (far beyond any sensible run) but finite: an absurd value
    # (lr=1e39, image_size=10**9) is refused here, naming the parameter, instead of
    # failing deep inside torch. Shared entries come from codafeat._params; the input
    # sides are checked against the backbone's stride when it is built.
    _torch_modules = ("student_", "teacher_")

    #: From the one parameter table, :data:`codafeat._defaults.PRETRAIN_PARAMS`.
    _parameter_constraints: dict = {name: constraints(row.accepts) for name, row in PRETRAIN_PARAMS.items()}

    def __init__(
        self,
        *,
        backbone: str = P["backbone"],
        init_weights: Any = P["init_weights"],
        image_size: int = P["image_size"],
        local_size: int = P["local_size"],
        n_local_crops: int = P["n_local_crops"],
        global_scale: tuple[float, float] = P["global_scale"],
        local_scale: tuple[float, float] = P["local_scale"],
        rotation: float = P["rotation"],
        hflip: bool = P["hflip"],
        brightness: float = P["brightness"],
        contrast: float = P["contrast"],
        gamma: tuple[float, float] = P["gamma"],
        jitter_prob: float = P["jitter_prob"],
        blur_prob: float | tuple[float, float, float] = P["blur_prob"],
        blur_sigma: tuple[float, float] = P["blur_sigma"],
        symmetric: bool = P["symmetric"],
        drop_path_rate: float = P["drop_path_rate"],
        epochs: int = P["epochs"],
        batch_size: int = P["batch_size"],
        lr: float = P["lr"],
        min_lr: float = P["min_lr"],
        warmup_epochs: int = P["warmup_epochs"],
        weight_decay: float = P["weight_decay"],
        weight_decay_end: float = P["weight_decay_end"],
        momentum_teacher: float = P["momentum_teacher"],
        head_out_dim: int = P["head_out_dim"],
        head_hidden_dim: int = P["head_hidden_dim"],
        head_bottleneck_dim: int = P["head_bottleneck_dim"],
        temperature: float = P["temperature"],
        denominator: str = P["denominator"],
        student_temp: float = P["student_temp"],
        teacher_temp: float = P["teacher_temp"],
        warmup_teacher_temp: float = P["warmup_teacher_temp"],
        warmup_teacher_temp_epochs: int = P["warmup_teacher_temp_epochs"],
        center_momentum: float = P["center_momentum"],
        lambda_inter: float = P["lambda_inter"],
        lambda_intra: float = P["lambda_intra"],
        koleo_weight: float = P["koleo_weight"],
        clip_grad: float = P["clip_grad"],
        freeze_last_layer: int = P["freeze_last_layer"],
        accumulate_steps: int = P["accumulate_steps"],
        head_fp32: bool = P["head_fp32"],
        compile: bool | str = P["compile"],
        device: str = P["device"],
        num_workers: int = P["num_workers"],
        cache_dir: str | os.PathLike | None = P["cache_dir"],
        checkpoint_dir: str | os.PathLike | None = P["checkpoint_dir"],
        checkpoint_every: int = P["checkpoint_every"],
        resume: bool = P["resume"],
        organ_from: str = P["organ_from"],
        organ_map: dict[str, str] | str | os.PathLike | None = P["organ_map"],
        bit_depth: int | None = P["bit_depth"],
        on_error: str = P["on_error"],
        monitor_every: int = P["monitor_every"],
        monitor_fraction: float = P["monitor_fraction"],
        log_dir: str | os.PathLike | None = P["log_dir"],
        random_state: Any = P["random_state"],
        verbose: int = P["verbose"],
    ) -> None:
        self.backbone = backbone
        self.init_weights = init_weights
        self.image_size = image_size
        self.local_size = local_size
        self.n_local_crops = n_local_crops
        self.global_scale = global_scale
        self.local_scale = local_scale
        self.rotation = rotation
        self.hflip = hflip
        self.brightness = brightness
        self.contrast = contrast
        self.gamma = gamma
        self.jitter_prob = jitter_prob
        self.blur_prob = blur_prob
        self.blur_sigma = blur_sigma
        self.symmetric = symmetric
        self.drop_path_rate = drop_path_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.min_lr = min_lr
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.weight_decay_end = weight_decay_end
        self.momentum_teacher = momentum_teacher
        self.head_out_dim = head_out_dim
        self.head_hidden_dim = head_hidden_dim
        self.head_bottleneck_dim = head_bottleneck_dim
        self.temperature = temperature
        self.denominator = denominator
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.lambda_inter = lambda_inter
        self.lambda_intra = lambda_intra
        self.koleo_weight = koleo_weight
        self.clip_grad = clip_grad
        self.freeze_last_layer = freeze_last_layer
        self.accumulate_steps = accumulate_steps
        self.head_fp32 = head_fp32
        self.compile = compile
        self.device = device
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.organ_from = organ_from
        self.organ_map = organ_map
        self.bit_depth = bit_depth
        self.on_error = on_error
        self.monitor_every = monitor_every
        self.monitor_fraction = monitor_fraction
        self.log_dir = log_dir
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.target_tags.required = False
        return tags

    # ------------------------------------------------------------------ validation
    def _check_settings(self) -> None:
        """The checks that involve several parameters (each one alone is in the constraints)."""
        for name in ("global_scale", "local_scale"):
            v = getattr(self, name)
            if len(v) != 2 or not (0 < v[0] <= v[1] <= 1):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {v!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        self._views()  # gamma, blur_prob, blur_sigma: named errors before any data is read
        self._terms()  # the objective's own checks: a term to train, KoLeo only with the intra-organ head
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")

    def _check_output_dirs(self) -> None:
        """Fail before training when checkpoints or metrics could not be written later."""
        if self.checkpoint_dir is not None:
            check_writable(self.checkpoint_dir, what="checkpoint_dir", is_dir=True)
            for p in remove_stale(self.checkpoint_dir):
                logger.info("removed %s, left by an interrupted checkpoint write", p)
        if self.log_dir is not None:
            check_writable(self.log_dir, what="log_dir", is_dir=True)

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> CodaPretrainer:
        """Pretrain on ``X`` and build ``encoder_`` from the teacher.

        Parameters
        ----------
        X : folder, manifest, or sequence of images
            A folder with one subfolder per organ (images found recursively); a manifest,
            a ``.csv`` or ``.parquet`` file with columns ``path`` and ``organ`` (paths
            relative to its folder; Parquet needs ``pyarrow``); or a sequence of image
            paths (or arrays) with organ labels in ``y``.
        y : array-like of str or int, optional
            Organ labels when ``X`` is a sequence. With ``organ_from="dicom"`` labels come
            from the files' DICOM headers instead (see ``organ_from``).

        Returns
        -------
        self : CodaPretrainer
        """
        self._check_settings()
        self._check_output_dirs()
        device = resolve_device(self.device)  # under torchrun with CUDA: cuda:LOCAL_RANK
        info = D.setup(device.type)
        try:
            with denormals_flushed(device):
                self._fit(X, y, device, info)
        finally:
            D.teardown(info)
        return self

    def _fit(self, X: Any, y: Any, device: torch.device, info: D.DistInfo) -> None:
        ckpt, cache, labels, data_key = self._prepare(X, y, info)
        train_idx, monitor_idx, why_off = monitor_split(labels, self.monitor_fraction, self.seed_)
        self.monitor_indices_ = monitor_idx
        monitor = None
        if self.monitor_every and len(monitor_idx):
            monitor = TrainingMonitor.from_cache(cache, monitor_idx, labels, self.image_size, device)
            logger.info("training monitor: %d held-out images, every %d epoch(s)", len(monitor), self.monitor_every)
        elif self.monitor_every and info.is_main:
            logger.info("training monitor off: %s", why_off)
        dataset, sampler, loader = self._loader(cache, labels, train_idx, device, info)
        steps = len(sampler)
        self.n_train_images_ = len(dataset)
        self.data_summary_["n_train_images"] = int(len(dataset))  # the rest were held out for the monitor
        run = {
            "seed": self.seed_,
            "n_images": self.n_images_,
            "n_train_images": len(dataset),
            "steps_per_epoch": steps,
            "data_key": data_key,
        }
        trainer = self._build_trainer(self.seed_, steps, device, info)
        if self.checkpoint_dir is not None and info.is_main:
            # newest + previous + the one being written, each ~4 copies of the student
            # (student, teacher, AdamW's two moments)
            n_bytes = sum(p.numel() * p.element_size() for p in trainer.student_module.parameters())
            check_free_space(self.checkpoint_dir, 3 * 4 * n_bytes, what="checkpoint_dir")
        start_epoch, history = (
            resume.restore(ckpt, trainer, organs=[str(o) for o in self.organs_], run=run)
            if ckpt is not None
            else (0, [])
        )
        self.history_ = self._train(trainer, dataset, sampler, loader, monitor, info, start_epoch, history, run)
        # the background fill, if any: every shard on disk and the intensity kinds complete. Training never
        # depended on it (missing images are decoded on access), so a dead helper costs a warning, not the model.
        cache.finish(on_failure="warn")
        self.intensity_ = {"bit_depth": self.bit_depth, "kinds": dict(sorted(cache.kinds.items()))}
        self.student_ = trainer.student_module.to("cpu").eval()
        self.teacher_ = trainer.teacher.to("cpu").eval()
        self.encoder_ = self._make_encoder(self.teacher_, device)

    def _prepare(self, X: Any, y: Any, info: D.DistInfo) -> tuple[Any, DecodedCache, np.ndarray, str | None]:
        """Find the images, read the checkpoint to resume, fix the seed, decode: ``(ckpt, cache, labels, data key)``."""
        items, organ_names, unlabelled, organ_mapping = collect_organ_images(
            X,
            y,
            organ_from=self.organ_from,
            organ_map=self.organ_map,
            on_error=self.on_error,
            cache_dir=self.cache_dir,
        )
        _check_organs(organ_names, stage="input")
        ckpt = (
            resume.read_for_resume(self.checkpoint_dir, epochs=self.epochs, params=self._resume_signature())
            if self.resume
            else None
        )
        self.seed_ = self._run_seed(ckpt, info)
        cache, labels = self._decode(items, organ_names, info, skipped_before=unlabelled)
        # identity of the image set, checked on resume (hashing in-memory images costs time: only when checkpointing)
        legacy = ckpt is not None and not str(ckpt[2].get("data_key") or "v2:").startswith("v2:")
        data_key = (
            resume.data_key(items, cache.kept, labels, with_identity=not legacy)
            if self.checkpoint_dir is not None
            else None
        )
        kept = [items[int(i)] for i in cache.kept]
        self.data_summary_ = training_data_summary(
            kept if not isinstance(items, np.ndarray) else [], self.organs_[labels], cache_dir=self.cache_dir
        )
        self.data_summary_["n_images"] = int(len(labels))
        if organ_mapping:
            self.data_summary_["dicom_organ_map"] = organ_mapping
        return ckpt, cache, labels, data_key

    def _views(self) -> MultiCropViews:
        """The multi-crop views of the parameters (which also checks the view settings)."""
        blur = self.blur_prob if isinstance(self.blur_prob, Real) else tuple(self.blur_prob)
        return MultiCropViews(
            image_size=self.image_size,
            local_size=self.local_size,
            n_local_crops=self.n_local_crops,
            global_scale=tuple(self.global_scale),
            local_scale=tuple(self.local_scale),
            rotation=float(self.rotation),
            hflip=self.hflip,
            brightness=float(self.brightness),
            contrast=float(self.contrast),
            gamma=tuple(self.gamma),
            jitter_prob=float(self.jitter_prob),
            blur_prob=blur,
            blur_sigma=tuple(self.blur_sigma),
        )

    def _loader(
        self, cache: DecodedCache, labels: np.ndarray, train_idx: np.ndarray, device: torch.device, info: D.DistInfo
    ) -> tuple[MultiCropDataset, GlobalBatchSampler, DataLoader]:
        views = self._views()
        dataset = MultiCropDataset(cache, labels.astype(np.int64), views, seed=self.seed_, indices=train_idx)
        if self.batch_size % info.world_size:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by the {info.world_size} processes")
        per_rank = self.batch_size // info.world_size
        if per_rank < self.accumulate_steps:
            raise ValueError(
                f"accumulate_steps={self.accumulate_steps} exceeds the {per_rank} image(s) per process and step "
                f"(batch_size={self.batch_size} over {info.world_size} process(es))"
            )
        sampler = GlobalBatchSampler(
            len(dataset), per_rank, world_size=info.world_size, rank=info.rank, seed=self.seed_
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_views,
            num_workers=self.num_workers,
            pin_memory=DevicePolicy(device).pin_memory,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=worker_context() if self.num_workers > 0 else None,
        )
        return dataset, sampler, loader

    def _train(
        self,
        trainer: CodaTrainer,
        dataset: MultiCropDataset,
        sampler: GlobalBatchSampler,
        loader: DataLoader,
        monitor: TrainingMonitor | None,
        info: D.DistInfo,
        start_epoch: int,
        history: list,
        run: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """The epochs from ``start_epoch`` (:func:`~codafeat._train.pretraining.fit_pretraining`)."""

        def set_epoch(epoch: int) -> None:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)

        callbacks: list[Any] = []
        if monitor is not None:
            callbacks.append(MonitorCallback(monitor, every=self.monitor_every, epochs=self.epochs, info=info))
        callbacks.append(ReportCallback(epochs=self.epochs, info=info))
        log_dir = self.log_dir if self.log_dir is not None else self.checkpoint_dir
        callbacks.append(MetricsSinkCallback(log_dir, keep_through_epoch=start_epoch, info=info))
        if self.checkpoint_dir is not None:
            facts = {"params": self._resume_signature(), "organs": [str(o) for o in self.organs_], "run": run}
            callbacks.append(
                CheckpointCallback(
                    self.checkpoint_dir,
                    every=self.checkpoint_every,
                    epochs=self.epochs,
                    info=info,
                    record=lambda: facts,
                )
            )
        return fit_pretraining(
            trainer,
            loader,
            epochs=self.epochs,
            start_epoch=start_epoch,
            history=history,
            seed=self.seed_,
            set_epoch=set_epoch,
            callbacks=callbacks,
            extra=lambda: {"skipped_files": len(self.skipped_)},
            verbose=self.verbose,
        )

    def _run_seed(self, ckpt: tuple[Path, dict, dict] | None, info: D.DistInfo) -> int:
        """The run's seed: rank 0's draw on every rank; a resumed run's stored seed."""
        if ckpt is not None and self.random_state is None and "seed" in ckpt[2]:
            return int(ckpt[2]["seed"])
        seed = draw_seed(self.random_state)
        return int(D.broadcast_object(seed, info))

    def _decode(
        self, items: Any, organ_names: Any, info: D.DistInfo, *, skipped_before: list[str]
    ) -> tuple[DecodedCache, np.ndarray]:
        """The decoded-image cache (rank 0 builds a shared one first) and the organ labels."""
        t0 = time.perf_counter()
        if info.is_distributed and self.cache_dir is not None and not info.is_main:
            D.barrier(info)  # rank 0 builds the shared cache file first
        cache = DecodedCache.build(
            items,
            cache_size_for(self.image_size),
            cache_dir=self.cache_dir,
            on_error=self.on_error,
            num_workers=self.num_workers,
            verbose=self.verbose if info.is_main else 0,
            bit_depth=self.bit_depth,
            wait=info.is_distributed,  # one process: start training while the shards fill in the background
        )
        if info.is_distributed and self.cache_dir is not None and info.is_main:
            D.barrier(info)
        organ_names = np.asarray(organ_names)[np.asarray(cache.kept, dtype=int)]
        self.skipped_ = list(skipped_before) + list(cache.skipped)
        if self.skipped_:
            report_skipped(self.skipped_, context="CodaPretrainer.fit")
        _check_organs(organ_names, stage="readable images")
        self.organs_, labels = np.unique(organ_names, return_inverse=True)
        self.n_images_ = len(labels)
        logger.info(
            "%d images of %d organs (%s) ready in %.1fs",
            self.n_images_,
            len(self.organs_),
            ", ".join(f"{o}: {c}" for o, c in sorted(Counter(organ_names.tolist()).items())),
            time.perf_counter() - t0,
        )
        return cache, labels

    def _terms(self) -> Terms:
        """The terms this run trains (decided by the objective from the weights)."""
        return Terms.from_weights(self.lambda_inter, self.lambda_intra, self.koleo_weight)

    def _new_network(self) -> CodaNetwork:
        """A freshly initialised student (backbone and the heads of the active branches)."""
        terms = self._terms()
        return CodaNetwork(
            self.backbone,
            mean=MEAN,
            std=STD,
            with_org=terms.inter,
            with_ins=terms.intra,
            head_out_dim=self.head_out_dim,
            head_hidden_dim=self.head_hidden_dim,
            head_bottleneck_dim=self.head_bottleneck_dim,
            drop_path_rate=self.drop_path_rate,
            head_fp32=self.head_fp32,
        )

    def _schedules(self, steps: int) -> Schedules:
        total = self.epochs * steps
        warmup = self.warmup_epochs
        if warmup >= self.epochs:
            logger.warning(
                "warmup_epochs=%d >= epochs=%d: warm-up shortened to %d epoch(s)", warmup, self.epochs, self.epochs - 1
            )
            warmup = self.epochs - 1
        return Schedules(
            lr=cosine_schedule(self.lr, self.min_lr, total, warmup_steps=warmup * steps),
            weight_decay=cosine_schedule(self.weight_decay, self.weight_decay_end, total),
            momentum=cosine_schedule(self.momentum_teacher, 1.0, total),
            teacher_temp=teacher_temp_schedule(
                self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_temp_epochs, self.epochs
            ),
        )

    def _build_trainer(self, seed: int, steps: int, device: torch.device, info: D.DistInfo) -> CodaTrainer:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = self._new_network()
        check_input_size(student.backbone, self.backbone, local_size=self.local_size, image_size=self.image_size)
        self.init_weights_source_ = "random"
        if self.init_weights is not None:  # warm start: the backbone only, the heads stay fresh
            state, _, source = load_any(self.init_weights, backbone=self.backbone)
            load_backbone_state(student.backbone, state, source=source)
            self.init_weights_source_ = source
            logger.info("student and teacher backbones start from %s", source)
        student = DevicePolicy(device).module(student)
        # Every rank copies its teacher from rank 0's student (DDP would only broadcast
        # the student, after the teacher was already copied from each rank's own init).
        D.broadcast_module_(student, info)
        teacher = make_teacher(student)
        terms = self._terms()
        inter = InterOrganLoss(temperature=self.temperature, denominator=self.denominator) if terms.inter else None
        intra = (
            IntraOrganLoss(
                out_dim=self.head_out_dim, student_temp=self.student_temp, center_momentum=self.center_momentum
            ).to(device)
            if terms.intra
            else None
        )
        return CodaTrainer(
            student=student,
            teacher=teacher,
            inter_loss=inter,
            intra_loss=intra,
            lambda_inter=self.lambda_inter,
            lambda_intra=self.lambda_intra,
            schedules=self._schedules(steps),
            steps_per_epoch=steps,
            clip_grad=self.clip_grad,
            freeze_last_layer=self.freeze_last_layer,
            device=device,
            dist_info=info,
            n_local_crops=self.n_local_crops,
            symmetric=self.symmetric,
            accumulate_steps=self.accumulate_steps,
            compile=self.compile,
            koleo_weight=self.koleo_weight,
        )

    # ------------------------------------------------------------------ checkpoints
    def _resume_signature(self) -> dict[str, Any]:
        """The settings a checkpoint records and a resumed run must repeat."""
        return {k: resume.jsonable(getattr(self, k)) for k in RESUME_KEYS}

    # ------------------------------------------------------------------ results
    def _training_summary(self) -> dict[str, Any]:
        last = self.history_[-1] if getattr(self, "history_", None) else {}
        return {
            "method": "coda",
            "init_weights": getattr(self, "init_weights_source_", "random"),
            "epochs": int(self.epochs),
            "n_images": int(self.n_images_),
            "organs": [str(o) for o in self.organs_],
            "batch_size": int(self.batch_size),
            "lambda_inter": float(self.lambda_inter),
            "lambda_intra": float(self.lambda_intra),
            "koleo_weight": float(self.koleo_weight),
            "final_loss": last.get("loss"),
            "final_loss_inter": last.get("loss_inter"),
            "final_loss_intra": last.get("loss_intra"),
            "local_size": int(self.local_size),
            "n_local_crops": int(self.n_local_crops),
        }

    def _config(self, teacher: CodaNetwork) -> dict[str, Any]:
        return make_config(
            backbone=self.backbone,
            embed_dim=embed_dim(teacher.backbone),
            image_size=self.image_size,
            mean=MEAN,
            std=STD,
            training=self._training_summary(),
            data=self.data_summary_,
            extra={"intensity": self.intensity_},
        )

    def _make_encoder(self, teacher: CodaNetwork, device: torch.device) -> CodaEncoder:
        """The encoder on the teacher's backbone, on this process's device (its rank's GPU under torchrun)."""
        weights = Weights.from_state(
            teacher.backbone.state_dict(), self._config(teacher), source="CodaPretrainer teacher"
        )
        return CodaEncoder(weights=weights, device=device).fit()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the teacher backbone as a codafeat weights file (loadable by ``CodaEncoder``)."""
        check_is_fitted(self, "encoder_")
        return self.encoder_.save(path)

    def transform(self, X: Any):  # convenience: the fitted encoder's embeddings
        """Embed ``X`` with the fitted encoder (``self.encoder_.transform(X)``)."""
        check_is_fitted(self, "encoder_")
        return self.encoder_.transform(X)

    # ------------------------------------------------------------------ pickling (see codafeat._persist)
    def _module_config(self, name: str) -> dict[str, Any]:
        return self._config(self.teacher_)

    def _restore_module(self, name: str, tensors: dict, config: dict[str, Any], device: torch.device) -> None:
        net = self._new_network()
        net.load_state_dict(tensors, strict=True)
        setattr(self, name, net.eval())  # student_ and teacher_ live on the CPU


def _check_organs(organ_names: Any, *, stage: str) -> None:
    counts = Counter(str(o) for o in np.asarray(organ_names).tolist())
    if len(counts) < 2:
        raise ValueError(
            f"Coda needs images of at least 2 organs (the inter-organ loss contrasts organs); "
            f"the {stage} have {len(counts)}: {sorted(counts)}"
        )
    single = sorted(o for o, c in counts.items() if c < 2)
    if single:
        raise ValueError(f"every organ needs at least 2 images; in the {stage} these have one: {single}")
