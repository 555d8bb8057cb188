"""Image + mask pairs for segmentation: reading masks, resizing pairs, joint augmentation.

Mask rules (:func:`load_mask`, :func:`encode_mask`)
----------------------------------------------------
A mask is an integer label image the size of its image: a ``(h, w)`` array (integer,
bool, or float holding whole numbers), a PIL image, or a file (PNG, TIFF, BMP...; a
lossy JPEG mask is refused). Value ``v`` means class ``v``, so every value must lie in
``[0, n_classes)``. One exception, for the common binary PNG masks saved as 0/255: when
``n_classes == 2`` and a mask's values are all in ``{0, 255}``, 255 becomes class 1.
Colour (RGB) masks are accepted only when their channels are equal.

Resizing (:func:`resize_pair`)
------------------------------
For training an image and its mask are resized together to ``size`` x ``size``: the
image bilinearly, the mask by nearest neighbour (labels are never blended).

Augmentation (:class:`SegAugment`)
----------------------------------
Random affine transforms (scale, rotation, translation; horizontal flip off by default:
radiographs have a left and a right) applied *identically* to image and mask on the
device, batch-wise (bilinear for the image, nearest for the mask; outside the image
becomes 0 = background), plus intensity changes (contrast, brightness, gamma, noise) on
the image only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .io import ImageReadError, describe

__all__ = ["SegAugment", "encode_mask", "load_mask", "resize_image", "resize_mask", "resize_pair"]


# --------------------------------------------------------------------------- masks
def _read_mask_file(path: str | os.PathLike) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(path, "no such mask file")
    if p.suffix.lower() in (".jpg", ".jpeg"):
        raise ImageReadError(path, "JPEG compression alters label values; save masks as PNG")
    try:
        with Image.open(p) as pil:
            pil.load()
            return _pil_to_labels(pil, str(path))
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "unsupported or corrupt mask file") from exc
    except OSError as exc:
        raise ImageReadError(path, f"corrupt or truncated mask file ({exc})") from exc


def _pil_to_labels(pil: Image.Image, name: str) -> np.ndarray:
    if pil.mode == "P":  # palette index = label
        return np.asarray(pil)
    if pil.mode == "1":
        return np.asarray(pil, dtype=np.uint8)
    return _gray_labels(np.asarray(pil), name)


def _gray_labels(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        rgb = arr[..., : min(3, arr.shape[-1])]
        if not all(np.array_equal(rgb[..., 0], rgb[..., c]) for c in range(1, rgb.shape[-1])):
            raise ImageReadError(name, "colour mask with differing channels; give one label per pixel (h, w)")
        arr = rgb[..., 0]
    if arr.ndim != 2:
        raise ImageReadError(name, f"a mask must be 2-D (h, w), got shape {arr.shape}")
    return arr


def load_mask(item: Any, *, index: int | None = None) -> np.ndarray:
    """Read one mask (path, PIL image or array) to a 2-D array of raw label values.

    Raises
    ------
    ImageReadError
        Unreadable file, lossy JPEG, non-2-D or colour mask, non-integer float values.
    """
    if isinstance(item, (str, os.PathLike)):
        return _read_mask_file(item)
    name = describe(item, index)
    if isinstance(item, Image.Image):
        return _pil_to_labels(item, name)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        arr = np.asarray(item)
        if arr.size == 0:
            raise ImageReadError(name, f"empty mask of shape {arr.shape}")
        if arr.dtype == bool:
            return arr.astype(np.uint8)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ImageReadError(name, "a float mask must hold whole-number labels")
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "ui":
            raise ImageReadError(name, f"unsupported mask dtype {arr.dtype}")
        return _gray_labels(arr, name)
    raise ImageReadError(name, f"unsupported mask type {type(item).__name__}")


def encode_mask(raw: np.ndarray, n_classes: int, *, name: str) -> np.ndarray:
    """Apply the mask rules (module doc) and return ``uint8`` labels in ``[0, n_classes)``.

    Raises
    ------
    ValueError
        A negative label or a label ``>= n_classes``, naming the mask and the values.
    """
    values = np.unique(raw)
    if n_classes == 2 and values.size and set(values.tolist()) <= {0, 255}:
        return (raw == 255).astype(np.uint8)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= n_classes:
        bad = [int(v) for v in values if v < 0 or v >= n_classes][:5]
        hint = " (a binary 0/255 mask is read as 0/1 only with n_classes=2)" if 255 in values.tolist() else ""
        raise ValueError(
            f"mask {name}: label value(s) {bad} outside [0, n_classes={n_classes}); "
            f"values must be class indices 0..{n_classes - 1}{hint}"
        )
    return raw.astype(np.uint8)


# --------------------------------------------------------------------------- resizing
def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """An image ``(h, w)`` (``uint8`` or float in [0, 1]) as float32 ``size`` x ``size``, bilinear.

    ``uint8`` images are resized in Pillow's ``L`` mode (as :func:`codafeat.data.io.load_image`
    does) and then divided by 255.
    """
    if img.dtype == np.uint8:
        pil = Image.fromarray(np.ascontiguousarray(img), mode="L")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    img = np.asarray(img, dtype=np.float32)
    if img.shape == (size, size):
        return img
    pil = Image.fromarray(np.ascontiguousarray(img), mode="F")
    out = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A ``uint8`` label mask resized to ``size`` x ``size`` (nearest neighbour)."""
    if mask.shape == (size, size):
        return mask
    pil = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    return np.asarray(pil.resize((size, size), Image.NEAREST), dtype=np.uint8)


def resize_pair(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image and its mask together (bilinear / nearest)."""
    if img.shape != mask.shape:
        raise ValueError(f"image shape {img.shape} and mask shape {mask.shape} differ")
    return resize_image(img, size), resize_mask(mask, size)


# --------------------------------------------------------------------------- augmentation
@dataclasses.dataclass(frozen=True)
class SegAugment:
    """Joint random augmentation of image and mask batches, on their device.

    Parameters
    ----------
    scale : (float, float), default=(0.9, 1.1)
        Zoom factor range (> 1 zooms in).
    rotation : float, default=10.0
        Maximum rotation in degrees (uniform in ``[-rotation, rotation]``).
    translate : float, default=0.05
        Maximum shift as a fraction of the image side.
    hflip : bool, default=False
        Flip left-right with probability 0.5. Off by default: anatomy has a side.
    contrast : float, default=0.1
        Intensity scaled around the image mean by a factor in ``[1 - c, 1 + c]``.
    brightness : float, default=0.1
        Intensity shifted by a value in ``[-b, b]``.
    gamma : (float, float), default=(0.8, 1.25)
        Gamma correction range (log-uniform).
    noise : float, default=0.0
        Standard deviation of additive Gaussian noise.
    """

    scale: tuple[float, float] = (0.9, 1.1)
    rotation: float = 10.0
    translate: float = 0.05
    hflip: bool = False
    contrast: float = 0.1
    brightness: float = 0.1
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        glo, ghi = self.gamma
        if not 0 < glo <= ghi:
            raise ValueError(f"gamma must be (lo, hi) with 0 < lo <= hi, got {self.gamma}")
        for name in ("rotation", "translate", "contrast", "brightness", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.contrast >= 1:
            raise ValueError(f"contrast must be < 1, got {self.contrast}")

    @classmethod
    def from_param(cls, value: Any) -> SegAugment | None:
        """``True`` -> defaults, ``False``/``None`` -> no augmentation, a dict -> fields."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown augment setting(s) {unknown}; known: {sorted(known)}")
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        raise TypeError(f"augment must be a bool, None, a dict or a SegAugment, got {type(value).__name__}")

    def affine(
        self, n: int, height: int, width: int, *, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """``(n, 2, 3)`` sampling matrices for :func:`torch.nn.functional.affine_grid`.

        The transform is a rotation/zoom about the centre plus a shift, defined in pixel
        space (so non-square images are not sheared).
        """
        u = torch.rand(n, 5, generator=generator)  # sampled on the CPU: same draws on any device
        lo, hi = (math.log(s) for s in self.scale)
        s = torch.exp(lo + (hi - lo) * u[:, 0])
        a = torch.deg2rad((2 * u[:, 1] - 1) * self.rotation)
        tx = (2 * u[:, 2] - 1) * self.translate * 2  # normalised coordinates span 2
        ty = (2 * u[:, 3] - 1) * self.translate * 2
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        r = height / width  # pixel-space rotation expressed in normalised coordinates
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * flip
        theta[:, 0, 1] = -sin * r
        theta[:, 1, 0] = sin / r * flip
        theta[:, 1, 1] = cos
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        return theta.to(device)

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``images`` ``(B, 1, H, W)`` float in [0, 1] and ``masks`` ``(B, H, W)`` int.

        ``generator`` is a CPU :class:`torch.Generator`: the random draws do not depend on
        the device the batch lives on.
        """
        grid = self._grid(images, generator)
        img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = F.grid_sample(
            masks.unsqueeze(1).to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return self._intensity(img, generator), m.squeeze(1).round().to(masks.dtype)

    def images(self, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """The same random affine and intensity changes for images without masks (classification).

        Examples
        --------
        >>> import torch
        >>> x = torch.rand(2, 1, 16, 16)
        >>> y = SegAugment().images(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
        True
        """
        grid = self._grid(images, generator)
        img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self._intensity(img, generator)

    def _grid(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random sampling grid per image (:meth:`affine`), for ``grid_sample``."""
        n, _, h, w = images.shape
        theta = self.affine(n, h, w, generator=generator, device=images.device).to(images.dtype)
        return F.affine_grid(theta, list(images.shape), align_corners=False)

    def _intensity(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Contrast, brightness, gamma and noise of a batch, clamped to [0, 1]."""
        n, dev = img.shape[0], img.device
        u = torch.rand(n, 3, generator=generator).to(dev)
        c = 1 + (2 * u[:, 0] - 1) * self.contrast
        b = (2 * u[:, 1] - 1) * self.brightness
        glo, ghi = (math.log(g) for g in self.gamma)
        g = torch.exp(glo + (ghi - glo) * u[:, 2])
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * c.view(-1, 1, 1, 1) + mean + b.view(-1, 1, 1, 1)
        img = img.clamp(0, 1).pow(g.view(-1, 1, 1, 1))
        if self.noise > 0:
            img = img + self.noise * torch.randn(img.shape, generator=generator).to(dev)
        return img.clamp(0, 1)
