"""Reading radiographs: files, arrays and PIL images to one-channel float images in [0, 1].

(Why one module of more than 500 lines: it is the single place where pixels enter
codafeat. Every decoder, whether Pillow, DICOM or in-memory arrays, shares the error type,
the pixel limit (a module-level setting) and the scaling rules below. Splitting them
would scatter one contract and make the limit a setting to keep in sync.)

Every image that enters codafeat goes through :func:`load_image`, which returns a
``float32`` array of shape ``(h, w)`` scaled to ``[0, 1]``, optionally resized to a
square ``size`` x ``size`` (bilinear with antialiasing; the aspect ratio is not kept, so
the whole field of view is seen). :func:`decode_image` is the same but keeps 8-bit data
as ``uint8`` (the value divided by 255 is the image): a quarter of the memory, which is
what the streaming loaders pass between processes. The rules, in one place:

* **8-bit** data (``uint8`` arrays, 8-bit PNG/JPEG/TIFF/BMP, 8-bit DICOM without a VOI
  window or rescale) is divided by 255.
* **16-bit** and other integer data (``uint16`` arrays, 16-bit PNG/TIFF, 32-bit integer
  TIFF) is **min-max scaled per image**: detectors store 10-, 12-, 14- or 16-bit values in
  16-bit containers, so dividing by 65,535 would leave most images nearly black. A
  constant image becomes all zeros. With a **fixed bit depth** (``bit_depth=12``, say, for
  a 12-bit detector) it is divided by ``2**bit_depth - 1`` and clipped instead. That keeps
  the detector's absolute scale, where per-image min-max would stretch the noise of a
  nearly empty image to full contrast. DICOM files without a VOI window follow the same
  rule.
* **float** data already in ``[0, 1]`` is kept as is; other float data is min-max scaled
  per image. NaN or infinite values are an error.
* **colour** (RGB, RGBA, palette, CMYK...) becomes luminance,
  ``L = 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2, Pillow's ``convert("L")``); alpha
  is dropped.
* **DICOM** (needs the ``dicom`` extra, ``pydicom``), in the order of the standard's
  pipeline: the modality LUT (``RescaleSlope``/``RescaleIntercept``); then the VOI
  transform: a ``VOILUTSequence`` (min-max scaled afterwards), else the first
  ``WindowCenter``/``WindowWidth`` pair with its ``VOILUTFunction`` (``LINEAR``, the
  default, ``LINEAR_EXACT`` or ``SIGMOID``) mapped onto ``[0, 1]`` exactly as the
  standard maps it onto the output range, else the 8-bit / min-max rules above;
  finally the image is inverted when it is ``MONOCHROME1`` or its
  ``PresentationLUTShape`` is ``INVERSE`` (once, not twice: the DX IOD pairs MONOCHROME1
  with INVERSE for the same meaning), after the VOI window, as MONAI and cornerstone do,
  so that bone is bright. Multi-frame files: only the first frame is decoded, with a
  warning.
* JPEGs are decoded at a reduced scale when ``size`` allows (never below ``size``).
  Every file is decoded by Pillow or pydicom, which turn any corrupt data into a Python
  exception. (torchvision's libpng decoder, used before for 8-bit grey PNGs, aborts the
  whole process on a corrupt file, so it is not used.)
* **Pixel limit**: a file declaring more than :data:`MAX_IMAGE_PIXELS` pixels is refused
  before decoding (:func:`set_max_image_pixels`).

Each rule has a name, the image's **intensity kind**: ``"8bit"``, ``"minmax"``, ``"fixed"``,
``"unit"`` (float already in [0, 1]) or ``"voi"`` (a DICOM window or VOI LUT).
``decode_image(..., with_kind=True)`` returns it. The estimators record the kinds they were
trained on and warn when an input is scaled by another rule (see
:class:`~codafeat.CodaEncoder`).

A missing, empty, corrupt or unsupported file raises :class:`ImageReadError` (a
``ValueError``) naming the file; a bad in-memory image names its index.
:func:`load_images` with ``on_error="skip"`` leaves unreadable images out, logs a
warning listing them and returns their names.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: File suffixes recognised as images when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".pgm", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_SUFFIX_TUPLE = tuple(sorted(IMAGE_SUFFIXES))

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_255 = np.float32(255.0)
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageReadError(ValueError):
    """An image could not be read; ``path`` names the file (or the input's index).

    Examples
    --------
    >>> from codafeat.data.io import read_image
    >>> try:
    ...     read_image("no_such_file.png")
    ... except ImageReadError as exc:
    ...     print(exc.path, "|", exc.reason)
    no_such_file.png | no such file
    """

    def __init__(self, path: Any, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")

    def __reduce__(self):  # keep (path, reason) across DataLoader worker processes
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- scanning
def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a recognised image suffix (see :data:`IMAGE_SUFFIXES`).

    Examples
    --------
    >>> is_image_file("a/knee.PNG"), is_image_file("a/notes.txt"), is_image_file("a/png")
    (True, False, False)
    """
    name = os.path.basename(os.fspath(path))
    # str.endswith with a tuple: 5x faster than splitext at a million files; a hidden name
    # such as ".png" has no suffix for splitext either
    return name.lower().endswith(_SUFFIX_TUPLE) and not name.startswith(".")


def find_images(folder: str | os.PathLike) -> list[str]:
    """All image files under ``folder``, recursively, sorted by path; hidden entries are skipped.

    Symbolic links to directories are followed (``data/chest -> /archive/chest`` is the
    organ ``chest``), and each real directory is visited once, so a link loop cannot
    recurse forever and a directory linked twice is not read twice (the second link is
    logged). Files without an image suffix are not images and are ignored, but counted
    and logged.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    # Depth first, every folder's entries sorted by name: the same order as sorting the paths
    # by their components, without that sort (and string operations only: a million files).
    found: list[str] = []
    ignored = 0
    seen: set[tuple[int, int]] = set()
    stack = [_sorted_entries(os.path.join(str(root), "")[:-1], seen)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path, is_dir = entry
        if is_dir:
            stack.append(_sorted_entries(path, seen))
        elif path.lower().endswith(_SUFFIX_TUPLE):
            found.append(path)
        else:
            ignored += 1
    if ignored:
        logger.info("%s: ignored %d file(s) without an image suffix", root, ignored)
    return found


def _sorted_entries(folder: str, seen: set[tuple[int, int]]) -> Iterator[tuple[str, bool]]:
    """``(path, is_dir)`` of ``folder``'s visible entries by name; nothing for a folder already read."""
    try:
        st = os.stat(folder or os.sep)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: already read
            logger.info("%s: already read through another path (symbolic link), not read again", folder)
            return iter(())
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder or os.sep) as it:
            names = sorted((e.name, e) for e in it if not e.name.startswith("."))
    except OSError:
        return iter(())
    out = []
    for name, e in names:
        try:
            is_dir = e.is_dir()  # follows symbolic links
        except OSError:
            is_dir = False
        out.append((folder + os.sep + name, is_dir))
    return iter(out)


def as_image_list(X: Any) -> Sequence[ImageLike]:
    """Normalise the accepted input forms to a sequence of single images.

    Accepted: a folder path (all images found recursively, sorted), a single file path,
    a sequence of file paths, arrays or PIL images (sizes may differ), a ``(n, h, w)`` or
    ``(n, h, w, c)`` array (``c`` in 1, 3, 4), a 1-d array of paths, a pandas Series, or a
    one-column DataFrame. Arrays are not copied.

    Raises
    ------
    ValueError
        An array of another shape, a DataFrame with several columns, or a folder without
        images.
    TypeError
        Any other type.
    """
    if isinstance(X, (str, os.PathLike)):
        if Path(X).is_dir():
            found = find_images(X)
            if not found:
                raise ValueError(
                    f"no image files found in folder {os.fspath(X)!r} (suffixes: {sorted(IMAGE_SUFFIXES)})"
                )
            return found
        return [X]
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim == 1 or (X.ndim == 2 and X.shape[1] == 1):
                return [x.decode() if isinstance(x, bytes) else x for x in X.ravel()]
            return _bad_x(X)
        if X.ndim == 3 or (X.ndim == 4 and X.shape[-1] in (1, 3, 4)):
            return X  # indexable: X[i] is one image
        return _bad_x(X)
    if isinstance(X, Image.Image):
        return [X]
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame, without importing pandas
        if X.shape[1] != 1:
            raise ValueError(
                f"a DataFrame input must have exactly one column of images, got {X.shape[1]} columns "
                f"({list(X.columns)[:5]}); select it, e.g. df['path']"
            )
        return list(X.iloc[:, 0])
    if hasattr(X, "iloc"):  # pandas Series
        return list(X)
    if isinstance(X, Iterable) and not isinstance(X, (bytes, dict)):
        return list(X)
    raise TypeError(
        "X must be a folder, a sequence of file paths / arrays / PIL images, or an array of "
        f"shape (n, h, w) or (n, h, w, c); got {type(X).__name__}"
    )


def _bad_x(X: np.ndarray) -> Sequence[ImageLike]:
    raise ValueError(
        "an array X must have shape (n_images, h, w) or (n_images, h, w, c) with c in "
        f"(1, 3, 4), or be a 1-d array of paths; got shape {X.shape} and dtype {X.dtype}"
    )


def describe(item: Any, index: int | None = None) -> str:
    """A short name for an input image, for error messages: its path, or its index."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"<{type(item).__name__} at index {index}>" if index is not None else f"<{type(item).__name__}>"


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
