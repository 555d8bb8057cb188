"""Overlap metrics for segmentation masks: Dice and IoU (Jaccard).

Both functions take integer label masks: one mask ``(h, w)``, a stack ``(n, h, w)``, or a
list of masks of different sizes (paired by position). For each image and each class
``c`` in ``labels`` they compute

* IoU  = |T_c ∩ P_c| / |T_c ∪ P_c|
* Dice = 2 |T_c ∩ P_c| / (|T_c| + |P_c|)

where ``T_c`` / ``P_c`` are the pixels labelled ``c`` in the true / predicted mask. A class
absent from both masks of an image has an undefined score; it gets ``zero_division``
(default 1.0: both agree that the structure is absent). Scores are averaged over images
(each image counts once, the usual reporting in medical image segmentation) and, with
``average="macro"``, over classes.

By default ``labels`` are the *foreground* classes: every label found in ``y_true`` or
``y_pred`` except ``background`` (0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["dice", "iou", "overlap_counts"]


def _as_mask_pairs(y_true: Any, y_pred: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    def as_list(y: Any, name: str) -> list[np.ndarray]:
        if isinstance(y, np.ndarray):
            if y.ndim == 2:
                return [y]
            if y.ndim == 3:
                return list(y)
            raise ValueError(f"{name} must be a mask (h, w), a stack (n, h, w) or a list of masks; got shape {y.shape}")
        if isinstance(y, Sequence) and not isinstance(y, (str, bytes)):
            out = [np.asarray(m) for m in y]
            for i, m in enumerate(out):
                if m.ndim != 2:
                    raise ValueError(f"{name}[{i}] must be a 2-D mask, got shape {m.shape}")
            return out
        return as_list(np.asarray(y), name)

    t = as_list(y_true, "y_true")
    p = as_list(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} mask(s) but y_pred has {len(p)}")
    for i, (a, b) in enumerate(zip(t, p)):
        if a.shape != b.shape:
            raise ValueError(f"mask {i}: y_true has shape {a.shape} but y_pred has shape {b.shape}")
        for arr, name in ((a, "y_true"), (b, "y_pred")):
            if arr.dtype.kind not in "uib":
                raise ValueError(f"{name}[{i}] must hold integer labels, got dtype {arr.dtype}")
    return list(zip(t, p))


def overlap_counts(y_true: Any, y_pred: Any, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and class: intersection, |true| and |pred| pixel counts, each ``(n, k)``."""
    pairs = _as_mask_pairs(y_true, y_pred)
    labels = [int(c) for c in labels]
    inter = np.zeros((len(pairs), len(labels)), dtype=np.int64)
    n_t = np.zeros_like(inter)
    n_p = np.zeros_like(inter)
    for i, (t, p) in enumerate(pairs):
        for j, c in enumerate(labels):
            tc = t == c
            pc = p == c
            inter[i, j] = np.count_nonzero(tc & pc)
            n_t[i, j] = np.count_nonzero(tc)
            n_p[i, j] = np.count_nonzero(pc)
    return inter, n_t, n_p


def _labels(y_true: Any, y_pred: Any, labels: Sequence[int] | None, background: int | None) -> list[int]:
    if labels is not None:
        out = [int(c) for c in labels]
        if not out:
            raise ValueError("labels must name at least one class")
        return out
    pairs = _as_mask_pairs(y_true, y_pred)
    found: set[int] = set()
    for t, p in pairs:
        found.update(int(v) for v in np.unique(t))
        found.update(int(v) for v in np.unique(p))
    if background is not None:
        found.discard(int(background))
    if not found:
        raise ValueError(
            "no foreground class in y_true or y_pred (every pixel is background); pass labels= "
            "to score the background or name the classes"
        )
    return sorted(found)


def _score(
    kind: str,
    y_true: Any,
    y_pred: Any,
    labels: Sequence[int] | None,
    average: str | None,
    background: int | None,
    zero_division: float,
) -> float | np.ndarray:
    if average not in ("macro", None):
        raise ValueError(f"average must be 'macro' or None, got {average!r}")
    if not 0.0 <= float(zero_division) <= 1.0:
        raise ValueError(f"zero_division must be in [0, 1], got {zero_division!r}")
    cls = _labels(y_true, y_pred, labels, background)
    inter, n_t, n_p = overlap_counts(y_true, y_pred, cls)
    if kind == "iou":
        num, den = inter, n_t + n_p - inter
    else:
        num, den = 2 * inter, n_t + n_p
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(den > 0, num / np.maximum(den, 1), float(zero_division))
    per_class = per.mean(axis=0)
    return float(per_class.mean()) if average == "macro" else per_class


def iou(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Sequence[int] | None = None,
    average: str | None = "macro",
    background: int | None = 0,
    zero_division: float = 1.0,
) -> float | np.ndarray:
    """Intersection over union (Jaccard index) of label masks, averaged over images.

    Parameters
    ----------
    y_true, y_pred : ndarray (h, w) or (n, h, w), or list of 2-D integer arrays
        True and predicted label masks, paired by position (same shape per pair).
    labels : sequence of int, optional
        Classes to score. Default: every label present in either input except ``background``.
    average : {"macro", None}, default="macro"
        ``"macro"``: mean over ``labels``; ``None``: one score per class.
    background : int or None, default=0
        Label left out when ``labels`` is None (``None`` keeps all labels).
    zero_division : float, default=1.0
        Score of a class absent from both masks of an image.

    Returns
    -------
    float or ndarray of shape (n_labels,)
        In [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0, 1, 1, 0]])
    >>> p = np.array([[0, 1, 0, 0]])
    >>> iou(t, p)
    0.5
    """
    return _score("iou", y_true, y_pred, labels, average, background, zero_division)


def dice(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Sequence[int] | None = None,
    average: str | None = "macro",
    background: int | None = 0,
    zero_division: float = 1.0,
) -> float | np.ndarray:
    """Dice coefficient (F1 of pixels) of label masks, averaged over images.

    Same parameters as :func:`iou`. Per image and class, ``dice = 2 iou / (1 + iou)``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0, 1, 1, 0]])
    >>> p = np.array([[0, 1, 0, 0]])
    >>> round(dice(t, p), 4)
    0.6667
    """
    return _score("dice", y_true, y_pred, labels, average, background, zero_division)
