"""What a pretraining run's settings make: the views, the terms, the networks, the schedules, the trainer.

Pure functions of ``settings``, any object with ``CodaPretrainer``'s parameters as attributes
(the estimator itself, or the read-only snapshot :class:`~codafeat._train.run.PretrainingRun`
takes). The estimator calls them to check its settings before any data is read and to rebuild
its networks when unpickled; the run calls them to build what it trains.

Examples
--------
>>> from types import SimpleNamespace
>>> from codafeat._defaults import PRETRAIN
>>> s = SimpleNamespace(**dict(PRETRAIN, image_size=64, local_size=32, n_local_crops=2))
>>> views_of(s).n_local_crops, terms_of(s).inter, terms_of(s).intra
(2, True, True)
"""

from __future__ import annotations

import logging
from numbers import Real
from typing import Any

import torch

from .._defaults import MEAN, STD
from .._device import DevicePolicy
from ..data.views import MultiCropViews
from ..formats.timm import load_any
from ..losses.inter_organ import InterOrganLoss
from ..losses.intra_organ import IntraOrganLoss
from ..nn.backbone import check_input_size, load_backbone_state
from ..nn.coda_model import CodaNetwork
from ..nn.ema import make_teacher
from . import dist as D
from .loop import CodaTrainer, Schedules
from .objective import Terms
from .schedules import cosine_schedule, teacher_temp_schedule

logger = logging.getLogger(__name__)

__all__ = ["build_trainer", "new_network", "schedules_of", "terms_of", "views_of"]


def views_of(settings: Any) -> MultiCropViews:
    """The multi-crop views of the settings (which also checks the view settings, naming a bad one)."""
    s = settings
    blur = s.blur_prob if isinstance(s.blur_prob, Real) else tuple(s.blur_prob)
    return MultiCropViews(
        image_size=s.image_size,
        local_size=s.local_size,
        n_local_crops=s.n_local_crops,
        global_scale=tuple(s.global_scale),
        local_scale=tuple(s.local_scale),
        rotation=float(s.rotation),
        hflip=s.hflip,
        brightness=float(s.brightness),
        contrast=float(s.contrast),
        gamma=tuple(s.gamma),
        jitter_prob=float(s.jitter_prob),
        blur_prob=blur,
        blur_sigma=tuple(s.blur_sigma),
    )


def terms_of(settings: Any) -> Terms:
    """The terms the run trains (decided by the objective from the weights)."""
    return Terms.from_weights(settings.lambda_inter, settings.lambda_intra, settings.koleo_weight)


def new_network(settings: Any) -> CodaNetwork:
    """A freshly initialised student: the backbone and the heads of the terms that are on."""
    s, terms = settings, terms_of(settings)
    return CodaNetwork(
        s.backbone,
        mean=MEAN,
        std=STD,
        with_org=terms.inter,
        with_ins=terms.intra,
        head_out_dim=s.head_out_dim,
        head_hidden_dim=s.head_hidden_dim,
        head_bottleneck_dim=s.head_bottleneck_dim,
        drop_path_rate=s.drop_path_rate,
        head_fp32=s.head_fp32,
    )


def schedules_of(settings: Any, steps: int) -> Schedules:
    """The per-step and per-epoch schedules of ``settings.epochs`` epochs of ``steps`` steps."""
    s = settings
    total = s.epochs * steps
    warmup = s.warmup_epochs
    if warmup >= s.epochs:
        logger.warning(
            "warmup_epochs=%d >= epochs=%d: warm-up shortened to %d epoch(s)", warmup, s.epochs, s.epochs - 1
        )
        warmup = s.epochs - 1
    return Schedules(
        lr=cosine_schedule(s.lr, s.min_lr, total, warmup_steps=warmup * steps),
        weight_decay=cosine_schedule(s.weight_decay, s.weight_decay_end, total),
        momentum=cosine_schedule(s.momentum_teacher, 1.0, total),
        teacher_temp=teacher_temp_schedule(
            s.warmup_teacher_temp, s.teacher_temp, s.warmup_teacher_temp_epochs, s.epochs
        ),
    )


def _student(settings: Any, seed: int, policy: DevicePolicy, info: D.DistInfo) -> tuple[CodaNetwork, str]:
    """The student on the device, the same on every rank, and where its backbone started."""
    s = settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = new_network(s)
    check_input_size(student.backbone, s.backbone, local_size=s.local_size, image_size=s.image_size)
    source = "random"
    if s.init_weights is not None:  # warm start: the backbone only, the heads stay fresh
        state, _, source = load_any(s.init_weights, backbone=s.backbone)
        load_backbone_state(student.backbone, state, source=source)
        logger.info("student and teacher backbones start from %s", source)
    student = policy.module(student)
    # Every rank copies its teacher from rank 0's student (DDP would only broadcast
    # the student, after the teacher was already copied from each rank's own init).
    D.broadcast_module_(student, info)
    return student, source


def build_trainer(
    settings: Any, *, seed: int, steps: int, policy: DevicePolicy, info: D.DistInfo
) -> tuple[CodaTrainer, str]:
    """The trainer of a run (student from ``seed``, EMA teacher, losses, schedules) and its backbone's source."""
    s, terms = settings, terms_of(settings)
    student, source = _student(s, seed, policy, info)
    inter = InterOrganLoss(temperature=s.temperature, denominator=s.denominator) if terms.inter else None
    intra = None
    if terms.intra:
        intra = IntraOrganLoss(out_dim=s.head_out_dim, student_temp=s.student_temp, center_momentum=s.center_momentum)
        intra = intra.to(policy.device)
    trainer = CodaTrainer(
        student=student,
        teacher=make_teacher(student),
        inter_loss=inter,
        intra_loss=intra,
        lambda_inter=s.lambda_inter,
        lambda_intra=s.lambda_intra,
        schedules=schedules_of(s, steps),
        steps_per_epoch=steps,
        clip_grad=s.clip_grad,
        freeze_last_layer=s.freeze_last_layer,
        device=policy.device,
        dist_info=info,
        n_local_crops=s.n_local_crops,
        symmetric=s.symmetric,
        accumulate_steps=s.accumulate_steps,
        compile=s.compile,
        koleo_weight=s.koleo_weight,
    )
    return trainer, source
