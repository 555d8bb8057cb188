"""Multi-crop views of one radiograph: two global views and ``N`` local crops (Coda / DINO).

Per image, Coda's data pipeline yields two global views ``g1``, ``g2`` and ``N`` local
crops, each made by a random resized crop, a rotation, an intensity jitter and a
Gaussian blur (paper, Sec. 3: "color jittering, Gaussian blur, rotation, and random
cropping with N=12 crops of size 96x96 and a scale range of [0.4, 0.7]").

Speed: everything runs on small one-channel tensors with plain torch ops. The crop,
rotation, optional flip and resize of a view are one affine resampling
(:func:`torch.nn.functional.grid_sample`), and all views of one size are sampled in a
single call. Downscaling views read from a 2x average-pooled pyramid level so that
bilinear sampling never shrinks by more than about sqrt(2) (little aliasing, no
per-view anti-alias filter). Intensity jitter and blur are batched over the views of
one size.

Reproducibility: every random number comes from the ``torch.Generator`` passed to the
call (one draw per call), so the same generator state always gives the same views;
:class:`~codafeat.data.pretrain_dataset.MultiCropDataset` seeds it from
``(seed, epoch, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._defaults import (
    BLUR_PROB,
    BLUR_SIGMA,
    BRIGHTNESS,
    CONTRAST,
    GAMMA,
    GLOBAL_SCALE,
    IMAGE_SIZE,
    JITTER_PROB,
    LOCAL_SCALE,
    LOCAL_SIZE,
    MIN_LOCAL_CROPS,
    N_LOCAL_CROPS,
    ROTATION,
)
from .photometric import adjust_intensity, gaussian_blur

__all__ = ["MultiCropViews", "ViewParams", "adjust_intensity", "gaussian_blur", "sample_crop_boxes"]

#: DINO's blur sigmas are in pixels of a 224-px view; other ``image_size`` values scale them.
REFERENCE_SIZE = 224
_ATTEMPTS = 10  # crop attempts before the centre-crop fallback (as torchvision's RandomResizedCrop)

# Columns of the single uniform draw made per call (see MultiCropViews.sample).
_C_SCALE = slice(0, _ATTEMPTS)
_C_RATIO = slice(_ATTEMPTS, 2 * _ATTEMPTS)
_C_TOP, _C_LEFT, _C_ANGLE, _C_FLIP = 2 * _ATTEMPTS, 2 * _ATTEMPTS + 1, 2 * _ATTEMPTS + 2, 2 * _ATTEMPTS + 3
_C_JITTER, _C_BRIGHT, _C_CONTRAST, _C_GAMMA = range(2 * _ATTEMPTS + 4, 2 * _ATTEMPTS + 8)
_C_BLUR, _C_SIGMA = 2 * _ATTEMPTS + 8, 2 * _ATTEMPTS + 9
_N_COLS = 2 * _ATTEMPTS + 10


@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one call: row 0 is ``g1``, row 1 ``g2``, then the local crops.

    Attributes
    ----------
    boxes : ndarray (n_views, 4), float64
        Crop boxes ``(top, left, height, width)`` in continuous pixel coordinates of the
        input image (pixel ``j`` covers ``[j, j + 1]``); not rounded.
    angles : ndarray (n_views,)
        Rotation about the box centre, degrees.
    flips : ndarray (n_views,), bool
        Horizontal flips (always ``False`` unless ``hflip=True``).
    brightness, contrast, gamma : ndarray (n_views,)
        Intensity factors (1 = unchanged).
    sigmas : ndarray (n_views,)
        Gaussian blur sigma in output pixels; 0 means no blur.
    """

    boxes: np.ndarray
    angles: np.ndarray
    flips: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    gamma: np.ndarray
    sigmas: np.ndarray


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# --------------------------------------------------------------------------- crop boxes
def sample_crop_boxes(
    u_scale: np.ndarray,
    u_ratio: np.ndarray,
    u_top: np.ndarray,
    u_left: np.ndarray,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """Random-resized-crop boxes from uniform draws (vectorised torchvision algorithm).

    For each view, up to ``k`` attempts draw an area fraction uniformly in ``scale`` and an
    aspect ratio log-uniformly in ``ratio``; the first attempt whose box fits in the image
    is taken, placed uniformly. If none fits, the fallback is the whole image with its
    aspect ratio clamped to ``ratio``, centred. Boxes are continuous (not rounded).

    Parameters
    ----------
    u_scale, u_ratio : ndarray (n, k)
        Uniform [0, 1) draws for the area fraction and the aspect ratio of ``k`` attempts.
    u_top, u_left : ndarray (n,)
        Uniform [0, 1) draws for the box position.
    height, width : int
        Image size.
    scale, ratio : (float, float)
        Area-fraction range and aspect-ratio (width / height) range.

    Returns
    -------
    ndarray (n, 4), float64
        ``(top, left, box_height, box_width)``.
    """
    target = float(height * width) * (scale[0] + (scale[1] - scale[0]) * u_scale)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = np.sqrt(target * aspect)
    h = np.sqrt(target / aspect)
    ok = (w <= width) & (h <= height) & (w > 0) & (h > 0)
    rows = np.arange(len(ok))
    first = ok.argmax(axis=1)
    w_pick, h_pick = w[rows, first], h[rows, first]
    any_ok = ok.any(axis=1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w_pick = np.where(any_ok, w_pick, fw)
    h_pick = np.where(any_ok, h_pick, fh)
    top = np.where(any_ok, u_top * (height - h_pick), (height - h_pick) / 2)
    left = np.where(any_ok, u_left * (width - w_pick), (width - w_pick) / 2)
    return np.stack([top, left, h_pick, w_pick], axis=1)


# --------------------------------------------------------------------------- resampling
class _Pyramid:
    """Lazily built 2x average-pooled levels of a ``(1, 1, H, W)`` image, edge-padded by 1 px."""

    def __init__(self, img: torch.Tensor) -> None:
        self._levels = [img]
        self._padded: dict[int, torch.Tensor] = {}
        self.max_level = int(math.floor(math.log2(max(1, min(img.shape[-2:])))))

    def padded(self, k: int) -> torch.Tensor:
        if k not in self._padded:
            while len(self._levels) <= k:
                prev = self._levels[-1]
                h, w = prev.shape[-2] // 2 * 2, prev.shape[-1] // 2 * 2
                p = prev[..., :h, :w]  # 2x2 means (as avg_pool2d, about twice as fast on CPU)
                quad = p[..., 0::2, 0::2] + p[..., 1::2, 0::2] + p[..., 0::2, 1::2] + p[..., 1::2, 1::2]
                self._levels.append(quad.mul_(0.25))
            # One replicated pixel around the image: bilinear samples within half a pixel
            # outside the image take the edge value, farther ones (rotated corners) are 0.
            self._padded[k] = F.pad(self._levels[k], (1, 1, 1, 1), mode="replicate")
        return self._padded[k]


def _resample(pyr: _Pyramid, boxes: np.ndarray, angles: np.ndarray, flips: np.ndarray, size: int) -> torch.Tensor:
    """Crop + rotate + flip + resize each box to ``size`` x ``size``: ``(n, 1, size, size)``."""
    n = boxes.shape[0]
    out = torch.empty(n, 1, size, size)
    if n == 0:
        return out
    top, left, bh, bw = boxes.T
    # Pyramid level: the shrink factor closest to 1 in log scale (what is left is in [0.71, 1.41)).
    factor = np.sqrt(bh * bw) / size
    levels = np.clip(np.floor(np.log2(np.maximum(factor, 1e-12)) + 0.5), 0, pyr.max_level).astype(np.int64)
    rad = np.deg2rad(angles)
    cos, sin = np.cos(rad), np.sin(rad)
    sx = np.where(flips, -bw / 2, bw / 2)  # output x in [-1, 1] -> box half-width (mirrored if flipped)
    sy = bh / 2
    cx, cy = left + bw / 2, top + bh / 2
    base = torch.arange(size, dtype=torch.float64).mul_(2).add_(1).div_(size).sub_(1).numpy()  # pixel centres
    for k in np.unique(levels):
        idx = np.flatnonzero(levels == k)
        img = pyr.padded(int(k))
        step = float(2**k)
        # The padded level covers [-step, (W_k + 1) * step] in input pixel coordinates;
        # grid_sample's normalised coordinates (align_corners=False) map that span to [-1, 1].
        ax, ay = 2 / (img.shape[-1] * step), 2 / (img.shape[-2] * step)
        # Source point of output (u, v): centre + R(angle) @ (u * sx, v * sy), then normalised.
        # x_norm = cols_x[u] + rows_x[v], y_norm = cols_y[u] + rows_y[v]: a separable sum.
        cols_x = (ax * cos[idx] * sx[idx])[:, None] * base + (ax * (cx[idx] + step) - 1)[:, None]
        rows_x = (-ax * sin[idx] * sy[idx])[:, None] * base
        cols_y = (ay * sin[idx] * sx[idx])[:, None] * base + (ay * (cy[idx] + step) - 1)[:, None]
        rows_y = (ay * cos[idx] * sy[idx])[:, None] * base
        m = idx.size
        grid = torch.empty(m, size, size, 2)
        torch.add(_f32(cols_x)[:, None, :], _f32(rows_x)[:, :, None], out=grid[..., 0])
        torch.add(_f32(cols_y)[:, None, :], _f32(rows_y)[:, :, None], out=grid[..., 1])
        # One grid_sample call for all views at this level: stack the grids vertically.
        res = F.grid_sample(
            img, grid.view(1, m * size, size, 2), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        if m == n:
            return res.view(n, 1, size, size)
        out[torch.from_numpy(idx)] = res.view(m, 1, size, size)
    return out


# --------------------------------------------------------------------------- the views
def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite pair with low <= high, got {value!r}")
    return lo, hi


class MultiCropViews:
    """Coda's multi-crop augmentation for one-channel radiographs.

    Calling ``views(img, generator)`` on a ``(1, H, W)`` image (``uint8``, or float in
    [0, 1]) returns ``g1`` and ``g2`` (``(1, image_size, image_size)``) and ``locals``
    (``(n_local_crops, 1, local_size, local_size)``), ``float32`` in [0, 1].

    Each view is a random resized crop (area fraction in ``global_scale`` or
    ``local_scale``, aspect ratio in ``ratio``), rotated about its centre by a uniform
    angle in ``[-rotation, rotation]``, resized (one bilinear resampling; pixels beyond
    the image are black), then with probability ``jitter_prob`` an intensity jitter
    (brightness, contrast, gamma), then with probability ``blur_prob`` a Gaussian blur.

    Where the defaults come from:

    * Coda paper (Sec. 3): ``n_local_crops=12``, ``local_size=96``,
      ``local_scale=(0.4, 0.7)``, ``image_size=224``; the list of augmentations (colour
      jitter, Gaussian blur, rotation, random cropping). The paper gives no magnitudes.
    * DINO (Caron et al. 2021, ``main_dino.py`` ``DataAugmentationDINO``):
      ``global_scale=(0.4, 1.0)`` (DINO's ``global_crops_scale``), ``ratio=(3/4, 4/3)``
      (torchvision's RandomResizedCrop), ``brightness=0.4``, ``contrast=0.4`` and
      ``jitter_prob=0.8`` (``ColorJitter(0.4, 0.4, ...)`` applied with p=0.8), blur
      sigma ``(0.1, 2.0)`` px with probabilities 1.0 (``g1``), 0.1 (``g2``), 0.5 (locals).
      The sigmas are pixels of a 224-px view: for another ``image_size`` they are scaled
      by ``image_size / 224`` (locals use the same pixel sigmas as the globals, as in DINO).
    * Ours, where neither gives a value: ``rotation=10`` degrees; ``gamma=(0.8, 1.2)``
      (albumentations' ``RandomGamma`` default), drawn uniformly, part of the intensity
      jitter. It takes the place of DINO's saturation and hue, which do not exist for one
      channel. The jitter steps run in a fixed order (brightness, contrast, gamma).

    Left out of DINO's recipe on purpose: the random **horizontal flip** (left and right
    anatomy differ and radiographs carry laterality; ``hflip=True`` turns it back on with
    p=0.5); **colour-to-grey** conversion (meaningless: radiographs are already one
    channel); and **solarisation** (inverting the bright half of a greyscale radiograph
    reverses bone/soft-tissue contrast and yields an image no detector produces; the
    paper does not list it).

    Parameters
    ----------
    image_size : int, default=224
        Side of the global views.
    local_size : int, default=96
        Side of the local crops.
    n_local_crops : int, default=12
        Number of local crops (0 allowed).
    global_scale, local_scale : (float, float)
        Area-fraction ranges of the crops, in (0, 1].
    rotation : float, default=10.0
        Maximum absolute rotation, degrees.
    brightness, contrast : float, default=0.4
        Factors are drawn uniformly in ``[max(0, 1 - v), 1 + v]``.
    gamma : (float, float), default=(0.8, 1.2)
        Range of the gamma exponent (``(1, 1)`` disables it).
    blur_prob : float or (float, float, float), default=(1.0, 0.1, 0.5)
        Blur probability for ``g1``, ``g2`` and each local crop (one float: all views).
    hflip : bool, default=False
        Random horizontal flips with probability 0.5.
    ratio : (float, float), default=(3/4, 4/3)
        Aspect-ratio (width / height) range of the crops.
    jitter_prob : float, default=0.8
        Probability that a view gets the intensity jitter.
    blur_sigma : (float, float), default=(0.1, 2.0)
        Blur sigma range in pixels of a 224-px view.

    Examples
    --------
    >>> import torch
    >>> views = MultiCropViews(image_size=32, local_size=16, n_local_crops=4)
    >>> img = torch.randint(0, 256, (1, 40, 40), dtype=torch.uint8)
    >>> g1, g2, loc = views(img, torch.Generator().manual_seed(0))
    >>> tuple(g1.shape), tuple(g2.shape), tuple(loc.shape)
    ((1, 32, 32), (1, 32, 32), (4, 1, 16, 16))
    """

    def __init__(
        self,
        image_size: int = IMAGE_SIZE,
        local_size: int = LOCAL_SIZE,
        n_local_crops: int = N_LOCAL_CROPS,
        global_scale: tuple[float, float] = GLOBAL_SCALE,
        local_scale: tuple[float, float] = LOCAL_SCALE,
        rotation: float = ROTATION,
        brightness: float = BRIGHTNESS,
        contrast: float = CONTRAST,
        gamma: tuple[float, float] = GAMMA,
        blur_prob: float | tuple[float, float, float] = BLUR_PROB,
        hflip: bool = False,
        *,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter_prob: float = JITTER_PROB,
        blur_sigma: tuple[float, float] = BLUR_SIGMA,
    ) -> None:
        for name, v in (("image_size", image_size), ("local_size", local_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if (
            isinstance(n_local_crops, bool)
            or not isinstance(n_local_crops, (int, np.integer))
            or n_local_crops < MIN_LOCAL_CROPS
        ):
            raise ValueError(f"n_local_crops must be an integer >= {MIN_LOCAL_CROPS}, got {n_local_crops!r}")
        self.image_size = int(image_size)
        self.local_size = int(local_size)
        self.n_local_crops = int(n_local_crops)
        self.global_scale = _pair(global_scale, "global_scale")
        self.local_scale = _pair(local_scale, "local_scale")
        for name, (lo, hi) in (("global_scale", self.global_scale), ("local_scale", self.local_scale)):
            if lo <= 0 or hi > 1:
                raise ValueError(f"{name} must lie in (0, 1], got {(lo, hi)}")
        self.ratio = _pair(ratio, "ratio")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {ratio!r}")
        for name, v in (("rotation", rotation), ("brightness", brightness), ("contrast", contrast)):
            if not math.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.rotation = float(rotation)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = _pair(gamma, "gamma")
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        probs = (blur_prob,) * 3 if isinstance(blur_prob, (int, float)) else tuple(blur_prob)
        if len(probs) != 3 or not all(0.0 <= float(p) <= 1.0 for p in probs):
            raise ValueError(f"blur_prob must be a probability or 3 probabilities (g1, g2, local), got {blur_prob!r}")
        self.blur_prob = tuple(float(p) for p in probs)
        if not 0.0 <= float(jitter_prob) <= 1.0:
            raise ValueError(f"jitter_prob must be in [0, 1], got {jitter_prob!r}")
        self.jitter_prob = float(jitter_prob)
        self.blur_sigma = _pair(blur_sigma, "blur_sigma")
        if self.blur_sigma[0] < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma!r}")
        self.hflip = bool(hflip)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, local_size={self.local_size}, "
            f"n_local_crops={self.n_local_crops}, global_scale={self.global_scale}, "
            f"local_scale={self.local_scale}, rotation={self.rotation}, brightness={self.brightness}, "
            f"contrast={self.contrast}, gamma={self.gamma}, blur_prob={self.blur_prob}, hflip={self.hflip}, "
            f"ratio={self.ratio}, jitter_prob={self.jitter_prob}, blur_sigma={self.blur_sigma})"
        )

    @property
    def n_views(self) -> int:
        """Views per image: 2 global + ``n_local_crops``."""
        return 2 + self.n_local_crops

    def sample(self, height: int, width: int, generator: torch.Generator) -> ViewParams:
        """Draw the random parameters of all views of one ``height`` x ``width`` image.

        Consumes exactly one ``torch.rand`` draw of ``(n_views, 30)`` from ``generator``,
        whatever the parameters, so the generator advances the same way on every call.
        """
        n = self.n_views
        u = torch.rand(n, _N_COLS, generator=generator, dtype=torch.float64).numpy()
        boxes = np.concatenate(
            [
                sample_crop_boxes(
                    u[r, _C_SCALE], u[r, _C_RATIO], u[r, _C_TOP], u[r, _C_LEFT], height, width, scale, self.ratio
                )
                for r, scale in ((slice(0, 2), self.global_scale), (slice(2, None), self.local_scale))
            ]
        )
        jitter = u[:, _C_JITTER] < self.jitter_prob

        def factor(col: int, v: float) -> np.ndarray:
            lo = max(0.0, 1.0 - v)
            return np.where(jitter, lo + (1.0 + v - lo) * u[:, col], 1.0)

        gamma = np.where(jitter, self.gamma[0] + (self.gamma[1] - self.gamma[0]) * u[:, _C_GAMMA], 1.0)
        p_blur = np.full(n, self.blur_prob[2])
        p_blur[:2] = self.blur_prob[:2]
        lo, hi = self.blur_sigma
        sigma = (lo + (hi - lo) * u[:, _C_SIGMA]) * (self.image_size / REFERENCE_SIZE)
        return ViewParams(
            boxes=boxes,
            angles=(2 * u[:, _C_ANGLE] - 1) * self.rotation,
            flips=(u[:, _C_FLIP] < 0.5) & self.hflip,
            brightness=factor(_C_BRIGHT, self.brightness),
            contrast=factor(_C_CONTRAST, self.contrast),
            gamma=gamma,
            sigmas=np.where(u[:, _C_BLUR] < p_blur, sigma, 0.0),
        )

    def apply(self, img: torch.Tensor, params: ViewParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render the views described by ``params`` (see :meth:`sample`) from ``img``."""
        x = _as_float_image(img)
        pyr = _Pyramid(x.reshape(1, 1, *x.shape[-2:]))
        views = []
        for rows, size in ((slice(0, 2), self.image_size), (slice(2, None), self.local_size)):
            v = _resample(pyr, params.boxes[rows], params.angles[rows], params.flips[rows], size)
            v = adjust_intensity(
                v, _f32(params.brightness[rows]), _f32(params.contrast[rows]), _f32(params.gamma[rows])
            )
            v = gaussian_blur(v, params.sigmas[rows])
            views.append(v.clamp_(0.0, 1.0))
        glob, loc = views
        return glob[0], glob[1], loc

    def __call__(
        self, img: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of ``img`` (``(1, H, W)`` or ``(H, W)``): ``g1``, ``g2``, ``locals``.

        All randomness comes from ``generator``: the same generator state gives the same
        views.
        """
        x = _as_float_image(img)
        params = self.sample(x.shape[-2], x.shape[-1], generator)
        return self.apply(x, params)


def _as_float_image(img: torch.Tensor) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.array(img))
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img must be a torch.Tensor of shape (1, H, W), got {type(img).__name__}")
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"img must be a one-channel image of shape (1, H, W) or (H, W), got shape {tuple(img.shape)}")
    if img.dtype == torch.uint8:
        return img.float().mul_(1.0 / 255.0)
    if img.dtype.is_floating_point:
        return img.float()
    raise TypeError(f"img must be uint8 or floating point in [0, 1], got dtype {img.dtype}")
