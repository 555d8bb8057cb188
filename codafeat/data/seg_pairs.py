"""Image/mask pairs for segmentation: read, check and resize them together.

Used by :class:`~codafeat.CodaSegmenter`; masks follow the rules of
:mod:`codafeat.data.seg_augment` (:func:`~codafeat.data.seg_augment.load_mask`,
:func:`~codafeat.data.seg_augment.encode_mask`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .io import ImageReadError, as_image_list, decode_image, describe, report_skipped
from .seg_augment import encode_mask, load_mask, resize_image, resize_mask


def hw(shape: tuple[int, ...]) -> str:
    """``"HxW"`` of a shape, for messages."""
    return f"{shape[0]}x{shape[1]}"


def as_mask_items(Y: Any) -> Sequence[Any]:
    """The masks of ``Y`` (array ``(n, h, w)``, a list of masks or files, a folder) as a sequence."""
    if isinstance(Y, np.ndarray) and Y.ndim == 2:
        raise ValueError(f"Y must hold one mask per image: an array (n, h, w) or a list of masks; got shape {Y.shape}")
    if isinstance(Y, torch.Tensor):
        Y = Y.detach().cpu().numpy()
    return as_image_list(Y)


def check_counts(items: Sequence[Any], mask_items: Sequence[Any]) -> None:
    """One mask per image, or a ValueError."""
    if len(items) != len(mask_items):
        raise ValueError(f"X has {len(items)} image(s) but Y has {len(mask_items)} mask(s); give one mask per image")


def load_training_pairs(
    X: Any, Y: Any, size: int, n_classes: int, on_error: str, *, bit_depth: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Images ``(n, 1, size, size)`` float32 and masks ``(n, size, size)`` uint8, resized together.

    Returns the images, the masks, the masks' names and the skipped pairs' names.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 40, 40), np.uint8); masks[:, 5:20, 5:20] = 1
    >>> images, masks, names, skipped = load_training_pairs(masks * 0.5, masks, 32, 2, "raise")
    >>> tuple(images.shape), tuple(masks.shape), skipped
    ((2, 1, 32, 32), (2, 32, 32), [])
    """
    items = as_image_list(X)
    mask_items = as_mask_items(Y)
    check_counts(items, mask_items)
    imgs: list[np.ndarray] = []
    msks: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for i in range(len(items)):
        name, mname = describe(items[i], i), describe(mask_items[i], i)
        try:
            img = decode_image(items[i], index=i, bit_depth=bit_depth)
            raw = load_mask(mask_items[i], index=i)
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            skipped.append(exc.path)
            continue
        if img.shape != raw.shape:
            raise ValueError(
                f"image {name} is {hw(img.shape)} but its mask {mname} is {hw(raw.shape)} (pair {i}); "
                "an image and its mask must have the same size"
            )
        mask = encode_mask(raw, n_classes, name=mname)
        imgs.append(resize_image(img, size))
        msks.append(resize_mask(mask, size))
        names.append(mname)
    report_skipped(skipped, context="CodaSegmenter.fit")
    if skipped:
        warnings.warn(
            f"CodaSegmenter.fit skipped {len(skipped)} unreadable image/mask pair(s): " + ", ".join(skipped[:5]),
            UserWarning,
            stacklevel=3,
        )
    if not imgs:
        return torch.empty(0, 1, size, size), torch.empty(0, size, size, dtype=torch.uint8), names, skipped
    images = torch.from_numpy(np.stack(imgs)).unsqueeze(1)
    masks = torch.from_numpy(np.stack(msks))
    return images, masks, names, skipped


def warn_label_content(masks: torch.Tensor, names: list[str], n_classes: int) -> None:
    """Warn when masks hold no foreground, or a class never appears."""
    fg = (masks > 0).flatten(1).any(dim=1).numpy()
    empty = [names[i] for i in np.flatnonzero(~fg)]
    if empty:
        what = "all" if len(empty) == len(names) else f"{len(empty)} of {len(names)}"
        warnings.warn(
            f"{what} training masks are all background (no pixel of class >= 1) at the training size, "
            f"e.g. {empty[:3]}; check the masks (binary masks must be 0/1, or 0/255 with n_classes=2)",
            UserWarning,
            stacklevel=3,
        )
    present = set(torch.unique(masks).tolist())
    absent = [c for c in range(1, n_classes) if c not in present]
    if absent and len(empty) < len(names):
        warnings.warn(
            f"class(es) {absent} never appear in the training masks (n_classes={n_classes})",
            UserWarning,
            stacklevel=3,
        )
