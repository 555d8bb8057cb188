"""Reading radiographs: files, arrays and PIL images to one-channel float images in [0, 1].

Every image that enters codafeat goes through :func:`load_image`, which returns a
``float32`` array of shape ``(h, w)`` scaled to ``[0, 1]`` (optionally resized to a
square ``size``). The rules, in one place:

* **8-bit** data (``uint8`` arrays, 8-bit PNG/JPEG/TIFF) is divided by 255.
* **16-bit** data (``uint16`` arrays, 16-bit PNG/TIFF) is min-max scaled per image:
  detectors store 10-, 12-, 14- or 16-bit values in 16-bit containers, so dividing by
  65,535 would leave most images nearly black.
* **float** data already in ``[0, 1]`` is kept as is; other float data is min-max
  scaled per image. A constant image becomes all zeros.
* **colour** (RGB, RGBA, palette) becomes luminance (ITU-R 601-2), alpha is dropped.
* **DICOM** (needs the ``dicom`` extra, ``pydicom``): the modality LUT (rescale slope and
  intercept) and the VOI LUT or window are applied, ``MONOCHROME1`` is inverted so bone
  is bright, and the result is min-max scaled to ``[0, 1]``.

A missing, empty, corrupt or unsupported file raises :class:`ImageReadError` naming the
file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: File suffixes recognised as images when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".pgm", ".webp"}
)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(ValueError):
    """An image could not be read; ``path`` names the file (or the input's index)."""

    def __init__(self, path: Any, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


# --------------------------------------------------------------------------- scanning
def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a recognised image suffix (see :data:`IMAGE_SUFFIXES`)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: str | os.PathLike) -> list[str]:
    """All image files under ``folder``, recursively, sorted; hidden entries are skipped.

    Files without an image suffix are not images and are ignored, but counted and logged.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    found: list[str] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_file(name):
                found.append(os.path.join(dirpath, name))
            else:
                ignored += 1
    if ignored:
        logger.info("%s: ignored %d file(s) without an image suffix", root, ignored)
    return found


def as_image_list(X: Any) -> Sequence[ImageLike]:
    """Normalise the accepted input forms to a sequence of single images.

    Accepted: a folder path (all images found recursively), a sequence of file paths,
    arrays or PIL images, a ``(n, h, w)`` or ``(n, h, w, c)`` array, a pandas Series,
    or a one-column DataFrame. Arrays are not copied.
    """
    if isinstance(X, (str, os.PathLike)):
        if Path(X).is_dir():
            return find_images(X)
        return [X]
    if isinstance(X, np.ndarray):
        if X.dtype == object:
            return list(X.ravel()) if X.ndim <= 2 and (X.ndim < 2 or X.shape[1] == 1) else _bad_x(X)
        if X.ndim == 3 or (X.ndim == 4 and X.shape[-1] in (1, 3, 4)):
            return X  # indexable: X[i] is one image
        return _bad_x(X)
    if isinstance(X, Image.Image):
        return [X]
    try:  # pandas without importing it
        if hasattr(X, "iloc") and hasattr(X, "columns"):
            if X.shape[1] != 1:
                raise ValueError(
                    f"a DataFrame input must have exactly one column of images, got {X.shape[1]} columns"
                )
            return list(X.iloc[:, 0])
        if hasattr(X, "iloc"):
            return list(X)
    except AttributeError:  # pragma: no cover - defensive
        pass
    if isinstance(X, Iterable):
        return list(X)
    raise TypeError(
        "X must be a folder, a sequence of file paths / arrays / PIL images, or an array of "
        f"shape (n, h, w) or (n, h, w, c); got {type(X).__name__}"
    )


def _bad_x(X: np.ndarray) -> Sequence[ImageLike]:
    raise ValueError(
        "an array X must have shape (n_images, h, w) or (n_images, h, w, c) with c in "
        f"(1, 3, 4); got shape {X.shape}"
    )


def describe(item: Any, index: int | None = None) -> str:
    """A short name for an input image, for error messages: its path, or its index."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"<{type(item).__name__} at index {index}>" if index is not None else f"<{type(item).__name__}>"


# --------------------------------------------------------------------------- scaling
def to_unit_float(arr: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Scale a single-channel array to ``float32`` in ``[0, 1]`` (rules in the module doc)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1.0 / 255.0)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    out = arr.astype(np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise ImageReadError(name, "contains NaN or infinite values")
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(out.min()), float(out.max())
        if lo >= 0.0 and hi <= 1.0:
            return out
    return _minmax(out)


def _minmax(out: np.ndarray) -> np.ndarray:
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros_like(out, dtype=np.float32)
    out -= lo
    out *= np.float32(1.0 / (hi - lo))
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
    raise ImageReadError(
        name, f"an image array must be (h, w) or (h, w, c) with c in (1, 3, 4); got shape {arr.shape}"
    )


def _resize_float(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape == (size, size):
        return img
    pil = Image.fromarray(img, mode="F") if img.dtype == np.float32 else Image.fromarray(img.astype(np.float32))
    return np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)


def _resize_pil_l(pil: Image.Image, size: int) -> Image.Image:
    if pil.size == (size, size):
        return pil
    return pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)


# --------------------------------------------------------------------------- readers
def _read_pil(pil: Image.Image, name: str, size: int | None) -> np.ndarray:
    mode = pil.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(pil)
        if mode == "I" and arr.size and (arr.min() >= 0 and arr.max() <= 255):
            # 'I' can hold 8-bit data (e.g. some TIFFs); keep the 8-bit scaling rule.
            arr = arr.astype(np.uint8)
            out = to_unit_float(arr, name=name)
        else:
            out = _minmax(arr.astype(np.float32))
        return _resize_float(out, size) if size else out
    if mode == "F":
        out = to_unit_float(np.asarray(pil, dtype=np.float32), name=name)
        return _resize_float(out, size) if size else out
    if mode != "L":
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in pil.info):
            pil = pil.convert("RGBA").convert("RGB")
        pil = pil.convert("L")
    if size:
        pil = _resize_pil_l(pil, size)
    return np.asarray(pil, dtype=np.uint8).astype(np.float32) * np.float32(1.0 / 255.0)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Read a DICOM file to ``float32`` ``(h, w)`` in ``[0, 1]``, bone bright.

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or window
    (centre/width), inverts ``MONOCHROME1``, and min-max scales. Multi-frame files use
    the first frame (logged). Needs ``pydicom`` (``pip install codafeat[dicom]``).
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading DICOM file {str(path)!r} needs pydicom: pip install 'codafeat[dicom]'"
        ) from exc
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad/unsupported data
        raise ImageReadError(path, f"not a readable DICOM image ({type(exc).__name__}: {exc})") from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if frames > 1:
        logger.info("%s: %d frames, using the first", path, frames)
        arr = arr[0]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        arr = _to_gray(np.asarray(arr), str(path))
        return _minmax(arr.astype(np.float32))
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds)
    out = _minmax(np.asarray(arr, dtype=np.float32))
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def read_image(path: str | os.PathLike, *, size: int | None = None) -> np.ndarray:
    """Read one image file to ``float32`` ``(h, w)`` in ``[0, 1]``, resized to ``size``.

    JPEGs are decoded at a reduced scale when ``size`` allows (never below ``size``).

    Raises
    ------
    ImageReadError
        The file is missing, empty, corrupt, truncated or of an unsupported format.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(path, "no such file")
    if p.stat().st_size == 0:
        raise ImageReadError(path, "file is empty")
    if _is_dicom(p):
        out = read_dicom(p)
        return _resize_float(out, size) if size else out
    try:
        with Image.open(p) as pil:
            if size and pil.format == "JPEG":
                pil.draft("L", (size, size))
            pil.load()
            return _read_pil(pil, str(path), size)
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "unsupported or corrupt image file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from exc


def load_image(item: ImageLike, *, size: int | None = None, index: int | None = None) -> np.ndarray:
    """Any accepted single image (path, array, PIL image) to ``float32`` ``(h, w)`` in [0, 1]."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item, size=size)
    name = describe(item, index)
    if isinstance(item, Image.Image):
        return _read_pil(item, name, size)
    if isinstance(item, np.ndarray):
        if item.size == 0:
            raise ImageReadError(name, f"empty array of shape {item.shape}")
        if item.dtype.kind not in "uifb":
            raise ImageReadError(name, f"unsupported array dtype {item.dtype}")
        gray = _to_gray(item, name)
        if gray.dtype == np.uint8 and size:
            pil = _resize_pil_l(Image.fromarray(np.ascontiguousarray(gray), mode="L"), size)
            return np.asarray(pil, dtype=np.float32) * np.float32(1.0 / 255.0)
        if gray.dtype == np.uint16:
            out = _minmax(gray.astype(np.float32))
        else:
            out = to_unit_float(gray, name=name)
        return _resize_float(out, size) if size else out
    raise ImageReadError(name, f"unsupported input type {type(item).__name__}")


def load_images(
    X: Any, *, size: int | None = None, on_error: str = "raise"
) -> tuple[list[np.ndarray], list[str]]:
    """Load every image of ``X`` (see :func:`as_image_list`).

    Parameters
    ----------
    X : folder, sequence or array
        The images.
    size : int, optional
        Resize each image to ``size`` x ``size``.
    on_error : {"raise", "skip"}
        ``"skip"`` leaves unreadable images out, logs a warning and returns their names.

    Returns
    -------
    images : list of ndarray
        The readable images, in input order.
    skipped : list of str
        Names of the images that could not be read (empty with ``on_error="raise"``).
    """
    check_on_error(on_error)
    items = as_image_list(X)
    images: list[np.ndarray] = []
    skipped: list[str] = []
    for i in range(len(items)):
        try:
            images.append(load_image(items[i], size=size, index=i))
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            skipped.append(exc.path)
    report_skipped(skipped)
    return images, skipped


def check_on_error(on_error: str) -> None:
    """Validate an ``on_error`` parameter."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def report_skipped(skipped: Sequence[str], *, context: str = "") -> None:
    """Log a warning listing skipped images (nothing is dropped silently)."""
    if not skipped:
        return
    shown = ", ".join(skipped[:10]) + (f", ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
    logger.warning("%sskipped %d unreadable image(s): %s", f"{context}: " if context else "", len(skipped), shown)
