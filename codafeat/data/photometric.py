"""Photometric augmentations of the multi-crop views: intensity jitter and Gaussian blur.

Both work in place on a ``(n, 1, h, w)`` batch in [0, 1], each image with its own factors,
so that :class:`~codafeat.data.views.MultiCropViews` applies one batched call per view
kind instead of one call per image.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["adjust_intensity", "gaussian_blur"]


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# --------------------------------------------------------------------------- intensity
def adjust_intensity(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """Brightness, then contrast, then gamma, per image of a ``(n, 1, h, w)`` batch in [0, 1].

    ``brightness``: ``x * b``; ``contrast``: ``mean + c * (x - mean)`` with the image mean
    (as torchvision's ``adjust_brightness`` / ``adjust_contrast`` for one channel);
    ``gamma``: ``x ** g``. Each step is clamped to [0, 1]. Factors are ``(n,)`` tensors.
    Works in place on ``x`` and returns it.
    """
    b = brightness.view(-1, 1, 1, 1)
    c = contrast.view(-1, 1, 1, 1)
    x = x.mul_(b).clamp_(0.0, 1.0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = x.sub_(mean).mul_(c).add_(mean).clamp_(0.0, 1.0)
    if bool((gamma != 1).any()):
        x = x.pow_(gamma.view(-1, 1, 1, 1))
    return x


# --------------------------------------------------------------------------- blur
def _blur_matrices(sigmas: np.ndarray, size: int) -> torch.Tensor:
    """``(m, size, size)`` matrices ``B`` with ``B @ column = blurred column`` (mirror padding folded in)."""
    radius = min(int(math.ceil(3.0 * float(sigmas.max()))), size - 1)
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t[None, :] / sigmas[:, None]) ** 2)
    k[np.abs(t)[None, :] > np.ceil(3.0 * sigmas)[:, None]] = 0.0  # each view keeps its own radius
    k /= k.sum(axis=1, keepdims=True)
    src = np.abs(np.arange(size)[:, None] + t[None, :])  # source index of each tap; mirror at 0
    src = np.where(src > size - 1, 2 * (size - 1) - src, src)  # mirror at the end
    flat = torch.from_numpy((np.arange(size)[:, None] * size + src).reshape(-1))
    m = len(sigmas)
    mats = torch.zeros(m, size * size)
    mats.index_add_(1, flat, _f32(np.tile(k, (1, size))))
    return mats.view(m, size, size)


def gaussian_blur(x: torch.Tensor, sigmas: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each image of ``(n, 1, h, w)`` with its own sigma (pixels).

    Kernel radius ``ceil(3 * sigma)`` (at most ``side - 1``) for each image whatever the
    others' sigmas, normalised weights, mirror
    padding (``d c b | a b c d``). Images with ``sigma <= 0`` are left unchanged. Both
    passes are batched matrix products with banded matrices, which on small CPU tensors
    is faster than grouped convolutions. Works in place on ``x`` and returns it.
    """
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    n, _, h, w = x.shape
    sel = np.flatnonzero(sig > 0)
    if sel.size == 0 or h < 2 and w < 2:
        return x
    s = sig[sel]
    sel_t = torch.from_numpy(sel)
    y = x[sel_t, 0] if sel.size < n else x[:, 0]
    if h > 1:
        y = torch.matmul(_blur_matrices(s, h), y)
    if w > 1:
        y = torch.matmul(y, _blur_matrices(s, w).transpose(1, 2))
    if sel.size < n:
        x[sel_t, 0] = y
    else:
        x[:, 0] = y
    return x
