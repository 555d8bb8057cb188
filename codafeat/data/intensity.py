"""The intensity rules: how integer, float and colour pixels become ``float32`` in [0, 1], by name.

Part of the pixel contract of :mod:`codafeat.data.io` (read that module's docs first: the
rules and their names, :data:`INTENSITY_KINDS`, are listed there).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from .files import ImageReadError

__all__ = ["INTENSITY_KINDS", "as_unit_float", "check_bit_depth", "to_unit_float", "unseen_intensity_message"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_255 = np.float32(255.0)


# --------------------------------------------------------------------------- scaling
#: The names of the scaling rules (see the module doc).
INTENSITY_KINDS = ("8bit", "minmax", "fixed", "unit", "voi")


def check_bit_depth(bit_depth: Any) -> int | None:
    """``None`` or an int in [9, 32]: the fixed bit depth of integer data of more than 8 bits."""
    if bit_depth is None:
        return None
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, Integral) or not 9 <= bit_depth <= 32:
        raise ValueError(f"bit_depth must be None or an integer in [9, 32] (e.g. 12 or 14), got {bit_depth!r}")
    return int(bit_depth)


def _scale_wide(out: np.ndarray, bit_depth: int | None) -> tuple[np.ndarray, str]:
    """Integer data of more than 8 bits (as float32): fixed full scale, or per-image min-max."""
    if bit_depth is None:
        return _minmax(out), "minmax"
    out /= np.float32(2**bit_depth - 1)
    return np.clip(out, 0.0, 1.0, out=out), "fixed"


def _unit_kind(arr: np.ndarray, name: str, bit_depth: int | None = None) -> tuple[np.ndarray, str]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / _255, "8bit"
    if arr.dtype == bool:
        return arr.astype(np.float32), "8bit"
    out = arr.astype(np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise ImageReadError(name, "contains NaN or infinite values")
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(out.min()), float(out.max())
        if lo >= 0.0 and hi <= 1.0 + 1e-6:  # tolerate float rounding (e.g. luminance of white)
            return np.minimum(out, 1.0, out=out), "unit"
        return _minmax(out), "minmax"
    return _scale_wide(out, bit_depth)


def to_unit_float(arr: np.ndarray, *, name: str = "image", bit_depth: int | None = None) -> np.ndarray:
    """Scale a single-channel array to ``float32`` in ``[0, 1]`` (rules in the module doc).

    Examples
    --------
    >>> import numpy as np
    >>> to_unit_float(np.array([[100, 300]], np.uint16)).tolist()  # per-image min-max
    [[0.0, 1.0]]
    >>> to_unit_float(np.array([[0, 4095]], np.uint16), bit_depth=12).tolist()  # a 12-bit detector
    [[0.0, 1.0]]
    """
    return _unit_kind(arr, name, check_bit_depth(bit_depth))[0]


def as_unit_float(img: np.ndarray) -> np.ndarray:
    """A :func:`decode_image` result as ``float32`` in ``[0, 1]`` (``uint8`` is divided by 255)."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / _255
    return img


def _minmax(out: np.ndarray) -> np.ndarray:
    """Min-max scale a float32 array in place (a constant image becomes zeros).

    The minimum maps to exactly 0 and the maximum to exactly 1.
    """
    lo = out.min()
    out -= lo
    hi = out.max()
    if not hi > 0:
        return np.zeros_like(out, dtype=np.float32)
    out /= hi
    return out


def _to_gray(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return (rgb.astype(np.float32) @ _LUMA).round().clip(0, 255).astype(np.uint8)
        return rgb.astype(np.float32) @ _LUMA
    raise ImageReadError(name, f"an image array must be (h, w) or (h, w, c) with c in (1, 3, 4); got shape {arr.shape}")


#: How each intensity rule (:data:`INTENSITY_KINDS`) reads in a message.
_KIND_TEXT = {
    "8bit": "8-bit division (/255)",
    "minmax": "per-image min-max (16-bit or float data)",
    "fixed": "a fixed bit depth",
    "unit": "no scaling (float data in [0, 1])",
    "voi": "a DICOM VOI window",
}


def unseen_intensity_message(new: dict[str, int], trained: Any) -> str:
    """What to tell a user whose images went through intensity rules the weights never saw.

    ``new`` counts images per rule not among ``trained`` (the rules of the training images).

    Examples
    --------
    >>> print(unseen_intensity_message({"minmax": 3}, {"8bit": 100}))
    3 image(s) by per-image min-max (16-bit or float data), but the weights were trained on images scaled by \
8-bit division (/255) only; the model sees intensities it was not trained on. Convert the inputs, or set \
bit_depth to the detector's bit depth (see codafeat.data.io).
    """
    seen = ", ".join(f"{n} image(s) by {_KIND_TEXT.get(k, k)}" for k, n in sorted(new.items()))
    had = ", ".join(_KIND_TEXT.get(k, k) for k in sorted(trained))
    return (
        f"{seen}, but the weights were trained on images scaled by {had} only; the model sees intensities it was "
        "not trained on. Convert the inputs, or set bit_depth to the detector's bit depth (see codafeat.data.io)."
    )
