"""Decoding: files, bytes, arrays and PIL images to pixels, with the pixel limit and DICOM's pipeline.

Part of the pixel contract of :mod:`codafeat.data.io` (read that module's docs first).
:func:`set_max_image_pixels` changes the limit here, where every decoder reads it.
"""

from __future__ import annotations

import io
import logging
import os
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import DICOM_SUFFIXES, ImageLike, ImageReadError, as_image_list, check_on_error, describe, report_skipped
from .intensity import (
    _255,
    _minmax,
    _scale_wide,
    _to_gray,
    _unit_kind,
    as_unit_float,
    check_bit_depth,
)

#: (``MAX_IMAGE_PIXELS``, the current limit, is read as ``codafeat.data.io.MAX_IMAGE_PIXELS``: not in
#: ``__all__``, so that a star import does not copy a value that :func:`set_max_image_pixels` changes.)
__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "check_pixels",
    "decode_image",
    "load_image",
    "load_images",
    "read_dicom",
    "read_image",
    "resize_decoded",
    "set_max_image_pixels",
]

logger = logging.getLogger("codafeat.data.io")

_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _check_size(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise ValueError(f"size must be a positive integer or None, got {size!r}")
    return int(size)


def _resize_float(img: np.ndarray, size: int | None) -> np.ndarray:
    if not size or img.shape == (size, size):
        return img
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))
    out = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)  # bilinear never leaves [0, 1] except by rounding


def _resize_u8(img: np.ndarray | Image.Image, size: int | None) -> np.ndarray:
    """Resize an 8-bit greyscale image once, in Pillow's ``L`` mode (integer reduce, then bilinear)."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
    if size and pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(pil, dtype=np.uint8)


def resize_decoded(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a decoded image (:func:`decode_image`'s output) exactly as ``decode_image(..., size=size)`` does.

    ``uint8`` stays ``uint8`` (Pillow ``L`` mode); float stays float in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> resize_decoded(np.zeros((10, 20), np.uint8), 8).shape
    (8, 8)
    """
    if img.dtype == np.uint8:
        return _resize_u8(img, _check_size(size))
    return _resize_float(img, _check_size(size))


# --------------------------------------------------------------------------- PIL images
def _decode_pil(pil: Image.Image, name: str, size: int | None, bit_depth: int | None = None) -> tuple[np.ndarray, str]:
    mode = pil.mode
    if mode in _HIGH_BIT_MODES:
        out = np.asarray(pil)
        if out.ndim != 2:  # pragma: no cover - Pillow always gives 2-d arrays for these modes
            raise ImageReadError(name, f"unexpected array shape {out.shape} for mode {mode}")
        scaled, kind = _scale_wide(out.astype(np.float32), bit_depth)
        return _resize_float(scaled, size), kind
    if mode == "F":
        scaled, kind = _unit_kind(np.asarray(pil, dtype=np.float32), name)
        return _resize_float(scaled, size), kind
    if mode != "L":
        try:
            if mode in ("PA", "RGBa", "La") or (mode == "P" and "transparency" in pil.info):
                pil = pil.convert("RGBA")
            pil = pil.convert("L")
        except (ValueError, OSError) as exc:
            raise ImageReadError(name, f"unsupported image mode {mode!r} ({exc})") from exc
    return _resize_u8(pil, size), "8bit"


# --------------------------------------------------------------------------- pixel limit
#: The largest image (height x width, in pixels) any decoder accepts: 2**26, about 67 MP
#: (8192 x 8192; the largest radiographs, e.g. 4096 x 5120 mammograms, are a third of it).
#: A file that declares more is refused before its pixels are decoded, which stops
#: decompression bombs (a 431 KB PNG can declare 20000 x 20000). Change it with
#: :func:`set_max_image_pixels` or the ``CODAFEAT_MAX_IMAGE_PIXELS`` environment variable
#: (read at import, so DataLoader worker processes see it too). Pillow's own limit
#: (``PIL.Image.MAX_IMAGE_PIXELS``, twice of which is refused) applies on top.
DEFAULT_MAX_IMAGE_PIXELS = 2**26


def _env_limit() -> int:
    raw = os.environ.get("CODAFEAT_MAX_IMAGE_PIXELS")
    if raw is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"CODAFEAT_MAX_IMAGE_PIXELS must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"CODAFEAT_MAX_IMAGE_PIXELS must be a positive integer, got {raw!r}")
    return value


MAX_IMAGE_PIXELS = _env_limit()


def set_max_image_pixels(limit: int) -> int:
    """Set the pixel limit of every decoder (see :data:`MAX_IMAGE_PIXELS`); returns the old one.

    The new limit holds in this process; for DataLoader workers started with ``spawn`` set
    ``CODAFEAT_MAX_IMAGE_PIXELS`` in the environment instead.

    Examples
    --------
    >>> from codafeat.data.io import set_max_image_pixels
    >>> old = set_max_image_pixels(10_000)
    >>> set_max_image_pixels(old)
    10000
    """
    global MAX_IMAGE_PIXELS
    if isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 1:
        raise ValueError(f"the pixel limit must be a positive integer, got {limit!r}")
    old, MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS, int(limit)
    return old


def check_pixels(name: str, height: int, width: int) -> None:
    """Raise :class:`ImageReadError` when ``height x width`` exceeds :data:`MAX_IMAGE_PIXELS`."""
    if int(height) * int(width) > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            name,
            f"declares {width} x {height} = {int(height) * int(width):,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} (a decompression bomb, or raise codafeat.data.io.set_max_image_pixels / "
            "CODAFEAT_MAX_IMAGE_PIXELS)",
        )


# --------------------------------------------------------------------------- DICOM
def _has_dicom_magic(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2) mapped onto ``[0, 1]`` instead of the output range."""
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0).astype(np.float32)
    # LINEAR: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1; else ((x - (c-0.5)) / (w-1) + 0.5)
    if width <= 1.0:
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0).astype(np.float32)


def _first_value(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _dicom_to_unit(ds: Any, name: str, bit_depth: int | None = None) -> tuple[np.ndarray, str]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    check_pixels(name, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if frames > 1:
        logger.warning("%s: %d frames, only the first is used", name, frames)
        arr = np.asarray(pixel_array(ds, index=0))
    else:
        arr = np.asarray(ds.pixel_array)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # colour: pydicom gives RGB
        return _unit_kind(_to_gray(arr, name), name, bit_depth)
    if arr.ndim != 2:
        raise ImageReadError(name, f"unexpected DICOM pixel array shape {arr.shape}")
    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    x = apply_modality_lut(arr, ds)
    kind = "voi"
    if "VOILUTSequence" in ds:
        out = _minmax(np.asarray(apply_voi_lut(x, ds, prefer_lut=True), dtype=np.float32))
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None and _first_value(ds.WindowWidth) > 0:
        center, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        out = _window(np.asarray(x, dtype=np.float64), center, width, function)
    elif not rescaled and arr.dtype == np.uint8:
        out, kind = arr.astype(np.float32) / _255, "8bit"
    else:
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            logger.warning("%s: ignoring invalid WindowWidth %s", name, ds.WindowWidth)
        out, kind = _scale_wide(np.asarray(x, dtype=np.float32), bit_depth)
    if not np.all(np.isfinite(out)):
        raise ImageReadError(name, "DICOM pixel data gives NaN or infinite values")
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    if photometric == "MONOCHROME1" or inverse:
        out = 1.0 - out
    return out, kind


def _decode_dicom(source: Any, name: str, bit_depth: int | None = None) -> tuple[np.ndarray, str]:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading DICOM file {name!r} needs pydicom: pip install 'codafeat[dicom]'") from exc
    try:
        ds = pydicom.dcmread(source)
        return _dicom_to_unit(ds, name, bit_depth)
    except ImageReadError:
        raise
    except ImportError:
        raise
    except Exception as exc:  # pydicom raises many types for bad or unsupported data
        raise ImageReadError(name, f"not a readable DICOM image ({type(exc).__name__}: {exc})") from exc


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Read a DICOM file to ``float32`` ``(h, w)`` in ``[0, 1]``, bone bright.

    Applies the modality LUT, the VOI LUT or window, inverts ``MONOCHROME1`` (details in
    the module doc). Needs ``pydicom`` (``pip install codafeat[dicom]``).
    """
    return _decode_dicom(io.BytesIO(_read_bytes(path)), os.fspath(path))[0]


# --------------------------------------------------------------------------- files
def _read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(path, "file is empty")
    return data


def _decode_file(path: str | os.PathLike, size: int | None, bit_depth: int | None = None) -> tuple[np.ndarray, str]:
    name = os.fspath(path)
    data = _read_bytes(path)
    if Path(name).suffix.lower() in DICOM_SUFFIXES or _has_dicom_magic(data):
        out, kind = _decode_dicom(io.BytesIO(data), name, bit_depth)
        return _resize_float(out, size), kind
    try:
        with Image.open(io.BytesIO(data)) as pil:
            check_pixels(name, pil.size[1], pil.size[0])
            if size and pil.format == "JPEG":
                pil.draft("L", (size, size))  # DCT-domain downscale, never below size
            pil.load()
            return _decode_pil(pil, name, size, bit_depth)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "unsupported or corrupt image file (not a format Pillow or pydicom reads)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from exc


def read_image(path: str | os.PathLike, *, size: int | None = None) -> np.ndarray:
    """Read one image file to ``float32`` ``(h, w)`` in ``[0, 1]``, resized to ``size``.

    Raises
    ------
    ImageReadError
        The file is missing, empty, corrupt, truncated or of an unsupported format.
    """
    return as_unit_float(_decode_file(path, _check_size(size))[0])


# --------------------------------------------------------------------------- any input
def decode_image(
    item: ImageLike,
    *,
    size: int | None = None,
    index: int | None = None,
    bit_depth: int | None = None,
    with_kind: bool = False,
) -> Any:
    """Decode one image (path, array, PIL image) to ``(h, w)``, keeping 8-bit data 8-bit.

    Parameters
    ----------
    item : path, ndarray or PIL.Image.Image
        The image. Arrays are ``(h, w)`` or ``(h, w, c)`` with ``c`` in 1, 3, 4.
    size : int, optional
        Resize to ``size`` x ``size``.
    index : int, optional
        Position of ``item`` in its input, used to name in-memory images in errors.
    bit_depth : int, optional
        Fixed bit depth of integer data of more than 8 bits (module doc); ``None``:
        per-image min-max.
    with_kind : bool, default=False
        Also return the intensity kind, the name of the rule applied (module doc).

    Returns
    -------
    ndarray of shape (h, w) or (size, size)
        ``uint8`` for 8-bit sources (divide by 255 for ``[0, 1]``, see
        :func:`as_unit_float`), else ``float32`` in ``[0, 1]``. With ``with_kind``, the
        pair ``(image, kind)``.

    Examples
    --------
    >>> import numpy as np
    >>> img, kind = decode_image(np.array([[0, 2048], [4095, 0]], np.uint16), bit_depth=12, with_kind=True)
    >>> kind, img.dtype, round(float(img[0, 1]), 3)
    ('fixed', dtype('float32'), 0.5)

    Raises
    ------
    ImageReadError
        Unreadable file or invalid array (wrong shape, dtype, NaN...), naming it.
    """
    out, kind = _decode_any(item, _check_size(size), index, check_bit_depth(bit_depth))
    return (out, kind) if with_kind else out


def _decode_any(item: ImageLike, size: int | None, index: int | None, bit_depth: int | None) -> tuple[np.ndarray, str]:
    if isinstance(item, (str, os.PathLike)):
        return _decode_file(item, size, bit_depth)
    name = describe(item, index)
    if isinstance(item, Image.Image):
        try:
            return _decode_pil(item, name, size, bit_depth)
        except ImageReadError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageReadError(name, f"unreadable PIL image ({exc})") from exc
    if isinstance(item, np.ndarray):
        if item.size == 0:
            raise ImageReadError(name, f"empty array of shape {item.shape}")
        if item.dtype.kind not in "uifb":
            raise ImageReadError(name, f"unsupported array dtype {item.dtype}")
        gray = _to_gray(item, name)
        if gray.dtype == np.uint8:
            return _resize_u8(gray, size), "8bit"
        if gray.dtype == bool:
            return _resize_u8(gray.astype(np.uint8) * np.uint8(255), size), "8bit"
        scaled, kind = _unit_kind(gray, name, bit_depth)
        return _resize_float(scaled, size), kind
    raise ImageReadError(
        name, f"unsupported input type {type(item).__name__} (give a file path, a numpy array or a PIL image)"
    )


def load_image(
    item: ImageLike, *, size: int | None = None, index: int | None = None, bit_depth: int | None = None
) -> np.ndarray:
    """Any accepted single image (path, array, PIL image) to ``float32`` ``(h, w)`` in [0, 1].

    See :func:`decode_image` for the parameters and the module doc for the scaling rules.
    """
    return as_unit_float(decode_image(item, size=size, index=index, bit_depth=bit_depth))


def load_images(X: Any, *, size: int | None = None, on_error: str = "raise") -> tuple[list[np.ndarray], list[str]]:
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
        The readable images, in input order, ``float32`` in ``[0, 1]``.
    skipped : list of str
        Names of the images that could not be read (empty with ``on_error="raise"``).
    """
    check_on_error(on_error)
    size = _check_size(size)
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
    report_skipped(skipped, context="load_images")
    return images, skipped
