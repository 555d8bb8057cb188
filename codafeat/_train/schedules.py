"""Precomputed training schedules (DINO style): one value per optimiser step or per epoch.

Coda trains with "a cosine learning rate scheduler with a base learning rate of 1.25e-4"
(paper, Sec. 3). What the paper leaves open follows DINO's ``main_dino.py``: a linear
learning-rate warm-up, a cosine weight-decay schedule 0.04 -> 0.4, a cosine EMA-momentum
schedule 0.996 -> 1, and a per-epoch teacher temperature with an optional linear warm-up.

Two small, deliberate differences from DINO's ``utils.cosine_scheduler``: the warm-up ends one
step *before* ``base`` (DINO's ``linspace`` reaches ``base`` on its last warm-up step and then
repeats it on the first cosine step), and the cosine part reaches ``final`` exactly on the last
step (DINO's stops one step short of it).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["cosine_schedule", "teacher_temp_schedule"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base``, then a half cosine from ``base`` to ``final``.

    Parameters
    ----------
    base : float
        Value at the end of the warm-up (the peak learning rate, the initial momentum...).
    final : float
        Value on the last step.
    total_steps : int
        Length of the schedule (epochs x steps per epoch), >= 1.
    warmup_steps : int, default=0
        Number of warm-up steps, in [0, total_steps].
    warmup_start : float, default=0.0
        Value on the first warm-up step.

    Returns
    -------
    ndarray of float64, shape (total_steps,)
        ``s[i] = warmup_start + (base - warmup_start) * i / warmup_steps`` for ``i < warmup_steps``;
        then, with ``n = total_steps - warmup_steps`` and ``j = i - warmup_steps``,
        ``s[i] = final + (base - final) * (1 + cos(pi * j / (n - 1))) / 2`` (``base`` if ``n == 1``).

    Examples
    --------
    >>> cosine_schedule(1.0, 0.0, 5).round(3).tolist()
    [1.0, 0.854, 0.5, 0.146, 0.0]
    >>> cosine_schedule(1.0, 0.0, 4, warmup_steps=2).round(3).tolist()
    [0.0, 0.5, 1.0, 0.0]
    """
    base = _check_float("base", base)
    final = _check_float("final", final)
    warmup_start = _check_float("warmup_start", warmup_start)
    total_steps = _check_int("total_steps", total_steps, 1)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
    warm = warmup_start + (base - warmup_start) * np.arange(warmup_steps, dtype=np.float64) / max(warmup_steps, 1)
    n = total_steps - warmup_steps
    j = np.arange(n, dtype=np.float64)
    cos = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * j / max(n - 1, 1)))
    return np.concatenate([warm, cos])


def teacher_temp_schedule(warmup: float, final: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: ``linspace(warmup, final, warmup_epochs)``, then ``final``.

    This is DINO's ``DINOLoss.teacher_temp_schedule`` (defaults there: 0.04, 0.04, 0 epochs).

    Parameters
    ----------
    warmup : float
        Temperature of the first epoch, > 0.
    final : float
        Temperature after the warm-up, > 0.
    warmup_epochs : int
        Number of warm-up epochs, in [0, epochs].
    epochs : int
        Number of training epochs, >= 1.

    Returns
    -------
    ndarray of float64, shape (epochs,)

    Examples
    --------
    >>> teacher_temp_schedule(0.04, 0.07, 4, 6).round(3).tolist()
    [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
    """
    warmup = _check_float("warmup", warmup)
    final = _check_float("final", final)
    if warmup <= 0 or final <= 0:
        raise ValueError(f"teacher temperatures must be > 0, got warmup={warmup}, final={final}")
    epochs = _check_int("epochs", epochs, 1)
    warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
    if warmup_epochs > epochs:
        raise ValueError(f"warmup_epochs ({warmup_epochs}) must not exceed epochs ({epochs})")
    return np.concatenate(
        [np.linspace(warmup, final, warmup_epochs), np.full(epochs - warmup_epochs, final, dtype=np.float64)]
    )
