"""EMA teacher: ``teacher <- m * teacher + (1 - m) * student`` after every optimiser step.

Coda (paper, Sec. 2) updates the teacher backbone and both teacher heads as an exponential
moving average of the student's; the momentum ``m`` follows DINO's cosine schedule from
0.996 to 1 (see :func:`codafeat._train.schedules.cosine_schedule`).

Floating-point **parameters** are averaged. **Buffers** (e.g. BatchNorm running statistics;
ConvNeXt has none) are copied from the student, not averaged: they are statistics of the
data rather than learnt weights, and a copy keeps them consistent with the batch the
student last saw. Integer buffers (``num_batches_tracked``) can only be copied anyway.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_update", "make_teacher", "unwrap"]


def unwrap(model: object) -> nn.Module:
    """The bare module inside DDP / DataParallel / ``torch.compile`` / any ``.module`` wrapper."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif not isinstance(model, nn.Module) and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module  # a plain (non-Module) wrapper object
        elif (
            isinstance(model, nn.Module)
            and isinstance(getattr(model, "module", None), nn.Module)
            and list(model.children()) == [model.module]
            and not list(model.parameters(recurse=False))
            and not list(model.buffers(recurse=False))
        ):
            model = model.module  # a Module whose whole content is its ``.module``
        else:
            break
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module (or a wrapper with .module), got {type(model).__name__}")
    return model


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the (unwrapped) student with ``requires_grad=False`` everywhere, in eval mode.

    Eval mode turns off the student's dropout / stochastic depth in the teacher (DINO builds
    its teacher without drop-path). A training loop that calls ``teacher.train()`` undoes this.
    """
    teacher = copy.deepcopy(unwrap(student))
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def _pairs(teacher: nn.Module, student: nn.Module, kind: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    t_items = list(getattr(teacher, f"named_{kind}")())
    s_items = list(getattr(student, f"named_{kind}")())
    t_names = [n for n, _ in t_items]
    s_names = [n for n, _ in s_items]
    if t_names != s_names:
        only_t = sorted(set(t_names) - set(s_names))[:3]
        only_s = sorted(set(s_names) - set(t_names))[:3]
        raise ValueError(
            f"ema_update: teacher and student {kind} differ (teacher only: {only_t}, student only: {only_s}, "
            f"{len(t_names)} vs {len(s_names)} in all); the teacher must be a copy of the student"
        )
    return [t for _, t in t_items], [s for _, s in s_items]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: ``teacher_param <- momentum * teacher_param + (1 - momentum) * student_param``.

    Parameters
    ----------
    teacher : nn.Module
        The EMA copy (see :func:`make_teacher`); updated in place.
    student : nn.Module
        The trained network; may be wrapped in DDP (anything with ``.module`` is unwrapped).
    momentum : float
        ``m`` in [0, 1]: 1 keeps the teacher, 0 copies the student.

    Raises
    ------
    ValueError
        If ``momentum`` is outside [0, 1] or the two networks do not have the same parameters.
    """
    m = float(momentum)
    if not 0.0 <= m <= 1.0:  # also rejects NaN
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum!r}")
    teacher, student = unwrap(teacher), unwrap(student)
    t_params, s_params = _pairs(teacher, student, "parameters")
    if m < 1.0:
        # lerp: t + (1 - m) * (s - t) == m * t + (1 - m) * s; one fused pass per tensor group.
        s_params = [s.to(t.dtype) if s.dtype != t.dtype else s for t, s in zip(t_params, s_params)]
        if t_params:
            torch._foreach_lerp_(t_params, s_params, 1.0 - m)
    t_bufs, s_bufs = _pairs(teacher, student, "buffers")
    for t, s in zip(t_bufs, s_bufs):
        if t is not s:
            t.copy_(s)
