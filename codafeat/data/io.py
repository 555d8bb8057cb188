"""Reading radiographs: files, arrays and PIL images to one-channel float images in [0, 1].

The contract lives in three modules, imported here under one name: finding and naming
inputs (:mod:`codafeat.data.files`), the intensity rules (:mod:`codafeat.data.intensity`)
and decoding with the pixel limit (:mod:`codafeat.data.decode`). Import from here.

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

from typing import Any

from . import decode as _decode
from .decode import *  # noqa: F403
from .decode import __all__ as _decode_all
from .files import *  # noqa: F403
from .files import __all__ as _files_all
from .intensity import *  # noqa: F403
from .intensity import __all__ as _intensity_all

__all__ = sorted({*_files_all, *_intensity_all, *_decode_all, "MAX_IMAGE_PIXELS"})


def __getattr__(name: str) -> Any:
    if name == "MAX_IMAGE_PIXELS":  # a setting that set_max_image_pixels changes: read it where it lives
        return _decode.MAX_IMAGE_PIXELS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
