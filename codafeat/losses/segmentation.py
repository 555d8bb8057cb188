"""Segmentation losses of :class:`~codafeat.CodaSegmenter`: pixel cross-entropy and soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The ``loss`` values :func:`segmentation_loss` understands.
LOSSES = ("ce", "dice", "ce+dice")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the foreground classes, pooled over the batch.

    ``1 - mean_c (2 sum(p_c y_c) + eps) / (sum p_c + sum y_c + eps)`` for ``c >= 1``, with
    ``p`` the softmax of ``logits`` ``(B, C, H, W)`` and ``y`` the one-hot ``target``
    ``(B, H, W)``. Pooling over the batch keeps it defined for images without foreground.
    Computed in float32.

    Examples
    --------
    >>> import torch
    >>> target = torch.tensor([[[0, 1], [1, 0]]])
    >>> perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    >>> round(float(dice_loss(perfect, target)), 4)
    0.0
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``"ce"`` (pixel cross-entropy), ``"dice"`` (:func:`dice_loss`) or ``"ce+dice"`` (their sum).

    Examples
    --------
    >>> import torch
    >>> logits, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
    >>> round(float(segmentation_loss(logits, target, "ce")), 4)  # ln 2
    0.6931
    """
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    parts = kind.split("+")
    total = logits.new_zeros((), dtype=torch.float32)
    if "ce" in parts:
        total = total + F.cross_entropy(logits.float(), target.long())
    if "dice" in parts:
        total = total + dice_loss(logits, target)
    return total
