"""CodaPretrainer: Coda teacher-student pretraining as a scikit-learn estimator.

This module holds the declarations: every parameter documented, constrained (from the one
table, :data:`codafeat._defaults.PRETRAIN_PARAMS`) and stored by an explicit keyword-only
``__init__``, as scikit-learn's conventions want. ``fit`` checks the settings that involve
several parameters and hands a snapshot of them to :func:`codafeat._train.run.run_pretraining`
(prepare -> decode -> loader -> build -> epochs -> export); it copies the run's fitted state
onto the estimator and builds a :class:`~codafeat.CodaEncoder` on the EMA teacher.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils.validation import check_is_fitted

from ._defaults import PRETRAIN, PRETRAIN_PARAMS
from ._estimator.params import constraints
from ._estimator.persist import TorchStateMixin, atomic_fit
from ._train.build import new_network, terms_of, views_of
from ._train.run import run_pretraining, settings_of
from .encoder import CodaEncoder

logger = logging.getLogger(__name__)

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
        Readable images of the input (the training images and those held out for the monitor).
    n_train_images_ : int
        Images the networks trained on (``n_images_`` less the monitor's).
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
    # failing deep inside torch. Shared entries come from codafeat._estimator.params; the input
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
        views_of(self)  # gamma, blur_prob, blur_sigma: named errors before any data is read
        terms_of(self)  # the objective's own checks: a term to train, KoLeo only with the intra-organ head
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")

    # ------------------------------------------------------------------ fit
    @atomic_fit
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
        result, device = run_pretraining(settings_of(self), X, y)  # codafeat._train.run
        for name, value in result.attributes().items():
            setattr(self, name, value)
        # the encoder on the teacher's backbone, on this process's device (its rank's GPU under torchrun)
        self.encoder_ = CodaEncoder(weights=result.weights, device=device).fit()
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the teacher backbone as a codafeat weights file (loadable by ``CodaEncoder``).

        An existing weights file at ``path`` is replaced; any other existing file (a training
        image, a manifest) is not: ``FileExistsError``.
        """
        check_is_fitted(self, "encoder_")
        return self.encoder_.save(path)

    def transform(self, X: Any):  # convenience: the fitted encoder's embeddings
        """Embed ``X`` with the fitted encoder (``self.encoder_.transform(X)``)."""
        check_is_fitted(self, "encoder_")
        return self.encoder_.transform(X)

    # ------------------------------------------------------------------ pickling (see codafeat._estimator.persist)
    def _module_config(self, name: str) -> dict[str, Any]:
        return self.encoder_.config_  # the exported teacher's config: backbone, sizes, model card facts

    def _restore_module(self, name: str, tensors: dict, config: dict[str, Any], device: torch.device) -> None:
        net = new_network(self)
        net.load_state_dict(tensors, strict=True)
        setattr(self, name, net.eval())  # student_ and teacher_ live on the CPU
