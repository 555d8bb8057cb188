"""Synthetic radiograph phantoms for demonstrations and tests.

:func:`make_radiograph_phantoms` draws **synthetic** radiograph-like images of several
organs, each with an organ label and a within-organ variant label (view or side), for
``codafeat demo``, the examples and the tests. To write them as an organ-per-folder tree,
use :func:`codafeat.data.manifest.write_image_folder`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from sklearn.utils import check_random_state

logger = logging.getLogger(__name__)

__all__ = ["PHANTOM_ORGANS", "make_radiograph_phantoms"]

#: Organs drawn by :func:`make_radiograph_phantoms` and their within-organ variants.
PHANTOM_ORGANS: dict[str, tuple[str, ...]] = {
    "chest": ("frontal", "lateral"),
    "hand": ("left", "right"),
    "knee": ("ap", "lateral"),
    "spine": ("ap", "lateral"),
    "pelvis": ("male", "female"),
    "skull": ("frontal", "lateral"),
}


# =========================================================================== drawing
class _Pen:
    """Draws shapes given in unit coordinates through a random similarity transform.

    Coordinates: x right, y down, the image is the unit square. ``flip`` mirrors x before
    the rotation/scale/shift, which act about the centre.
    """

    def __init__(self, size: int, rot: float, scale: float, shift: np.ndarray, flip: bool, fill: int) -> None:
        self.size = size
        c, s = math.cos(rot) * scale, math.sin(rot) * scale
        self.m = np.array([[c, -s], [s, c]])
        self.shift = shift
        self.flip = flip
        self.img = Image.new("L", (size, size), int(fill))
        self.draw = ImageDraw.Draw(self.img)

    def _px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        p = np.array(pts, dtype=float).reshape(-1, 2)
        if self.flip:
            p[:, 0] = 1.0 - p[:, 0]
        p = (p - 0.5) @ self.m.T + 0.5 + self.shift
        return [(float(x), float(y)) for x, y in p * self.size]

    def poly(self, pts: Any, value: float) -> None:
        self.draw.polygon(self._px(pts), fill=_grey(value))

    def ellipse(self, c: Sequence[float], rx: float, ry: float, value: float, angle: float = 0.0, n: int = 28) -> None:
        a = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        x, y = rx * np.cos(a), ry * np.sin(a)
        ca, sa = math.cos(angle), math.sin(angle)
        self.poly(np.c_[c[0] + x * ca - y * sa, c[1] + x * sa + y * ca], value)

    def rect(self, c: Sequence[float], w: float, h: float, value: float, angle: float = 0.0) -> None:
        ca, sa = math.cos(angle), math.sin(angle)
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2.0
        self.poly(
            np.c_[c[0] + corners[:, 0] * ca - corners[:, 1] * sa, c[1] + corners[:, 0] * sa + corners[:, 1] * ca], value
        )

    def capsule(self, p0: Sequence[float], p1: Sequence[float], r: float, value: float) -> None:
        """A rod of radius ``r`` with round ends (a long bone, a finger)."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        length = float(np.hypot(*d)) or 1e-9
        n = np.array([-d[1], d[0]]) / length * r
        self.poly([p0 + n, p1 + n, p1 - n, p0 - n], value)
        self.ellipse(p0, r, r, value, n=14)
        self.ellipse(p1, r, r, value, n=14)

    def polyline(self, pts: Sequence[Sequence[float]], r: float, value: float) -> None:
        for a, b in zip(pts[:-1], pts[1:]):
            self.capsule(a, b, r, value)


def _grey(value: float) -> int:
    return int(min(255, max(0, round(value))))


def _chest(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    soft, bone, air = t["soft"], t["bone"], t["air"]
    if variant == "frontal":
        pen.ellipse((0.5, 0.56), 0.43, 0.46, soft)
        pen.capsule((0.5, 0.1), (0.5, 0.98), 0.035, 0.5 * (soft + bone) * 0.9)  # spine behind
        lw, lh = rng.uniform(0.12, 0.15), rng.uniform(0.25, 0.3)
        for side in (-1, 1):
            pen.ellipse((0.5 + side * 0.19, 0.5), lw, lh, air, angle=side * rng.uniform(0.0, 0.12))
        pen.ellipse((0.56, 0.64), rng.uniform(0.11, 0.15), 0.12, soft)  # heart
        n_ribs = rng.randint(8, 11)
        for k in range(n_ribs):
            y0 = 0.27 + k * 0.5 / n_ribs
            for side in (-1, 1):
                pts = [(0.5 + side * 0.04, y0), (0.5 + side * 0.2, y0 - 0.03), (0.5 + side * 0.35, y0 + 0.06)]
                pen.polyline(pts, 0.007, bone * 0.65)
        for side in (-1, 1):
            pen.capsule((0.5 + side * 0.05, 0.22), (0.5 + side * 0.32, 0.17), 0.016, bone)  # clavicles
    else:  # lateral
        pen.ellipse((0.5, 0.56), 0.34, 0.46, soft)
        pen.ellipse((0.49, 0.5), rng.uniform(0.2, 0.24), rng.uniform(0.27, 0.32), air)
        pen.ellipse((0.38, 0.63), 0.14, 0.12, soft)  # heart, anterior
        for k in range(7):  # posterior ribs, oblique
            y = 0.3 + k * 0.07
            pen.capsule((0.72, y), (0.32, y + 0.12), 0.006, bone * 0.6)
        curve = rng.uniform(0.0, 0.06)
        for k in range(9):  # thoracic vertebrae, posterior, kyphotic curve
            y = 0.18 + k * 0.085
            pen.rect((0.74 + curve * math.sin(math.pi * (y - 0.1)), y), 0.08, 0.06, bone * 0.9)
        pen.capsule((0.2, 0.25), (0.22, 0.6), 0.014, bone)  # sternum


def _hand(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    # drawn as a left hand; the right hand is the mirror image (pen.flip)
    soft, bone = t["soft"], t["bone"]
    pen.rect((0.5, 0.93), 0.28, 0.2, soft)  # forearm
    pen.capsule((0.43, 1.05), (0.44, 0.8), 0.028, bone * 0.9)  # radius/ulna
    pen.capsule((0.57, 1.05), (0.56, 0.8), 0.022, bone * 0.9)
    pen.ellipse((0.5, 0.64), 0.18, 0.16, soft)  # palm
    for cx, cy in ((0.42, 0.76), (0.48, 0.75), (0.54, 0.75), (0.59, 0.77), (0.45, 0.72), (0.53, 0.71)):
        pen.ellipse((cx, cy), 0.026, 0.022, bone * 0.85)  # carpals
    spread = rng.uniform(0.0, 1.0)
    flexed = set(rng.choice(4, size=rng.randint(0, 3), replace=False).tolist())
    bases = (0.4, 0.47, 0.54, 0.61)
    lengths = (0.9, 1.0, 0.95, 0.8)
    for i, (bx, ln) in enumerate(zip(bases, lengths)):
        ang = (i - 1.5) * (0.08 + 0.16 * spread)  # fan out from vertical
        d = np.array([math.sin(ang), -math.cos(ang)])
        head = np.array([bx + 0.3 * (bx - 0.5), 0.5])
        pen.capsule((bx, 0.72), head, 0.015, bone * 0.9)  # metacarpal
        fold = 0.45 if i in flexed else 1.0
        seg = [0.13 * ln * fold, 0.08 * ln * fold, 0.055 * ln * fold]
        tip = head + d * (sum(seg) + 0.03)
        pen.capsule(head, tip, 0.03, soft)  # finger soft tissue
        p = head + d * 0.012
        for s in seg:
            q = p + d * s
            pen.capsule(p, q, 0.012, bone)
            p = q + d * 0.012
    # thumb on the image right (left hand, PA view)
    ta = rng.uniform(0.5, 0.9)
    d = np.array([math.sin(ta), -math.cos(ta)])
    start = np.array([0.6, 0.74])
    pen.capsule(start, start + d * 0.3, 0.03, soft)
    p = start
    for s in (0.1, 0.08, 0.06):
        q = p + d * s
        pen.capsule(p, q, 0.014, bone)
        p = q + d * 0.012


def _knee(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    soft, bone = t["soft"], t["bone"]
    if variant == "ap":
        pen.rect((0.5, 0.5), 0.62, 1.2, soft)
        pen.poly([(0.42, -0.1), (0.58, -0.1), (0.64, 0.36), (0.36, 0.36)], bone * 0.9)  # femur shaft
        for side in (-1, 1):
            pen.ellipse((0.5 + side * 0.1, 0.42), 0.1, 0.07, bone * 0.9)  # condyles
        gap = rng.uniform(0.04, 0.07)
        top = 0.49 + gap
        pen.poly(
            [(0.3, top), (0.7, top), (0.62, top + 0.12), (0.58, 1.1), (0.43, 1.1), (0.39, top + 0.12)], bone * 0.88
        )
        pen.capsule((0.72, top + 0.05), (0.68, 1.1), 0.022, bone * 0.8)  # fibula
        pen.ellipse((0.5, 0.38), 0.075, 0.09, bone)  # patella over the femur
    else:  # lateral, flexed
        flex = rng.uniform(0.2, 0.6)
        pen.poly([(0.3, -0.1), (0.65, -0.1), (0.72, 0.6), (0.78, 1.1), (0.42, 1.1), (0.25, 0.55)], soft)
        pen.capsule((0.47, -0.1), (0.5, 0.42), 0.07, bone * 0.9)  # femur
        pen.ellipse((0.52, 0.47), 0.11, 0.1, bone * 0.9)  # condyles, overlapping
        knee = np.array([0.5, 0.6])
        d = np.array([math.sin(flex), math.cos(flex)])
        pen.capsule(knee + d * 0.04, knee + d * 0.6, 0.06, bone * 0.88)  # tibia
        pen.rect(knee, 0.24, 0.05, bone * 0.88, angle=flex)  # plateau
        pen.capsule(knee + d * 0.08 + (0.06, 0.0), knee + d * 0.55 + (0.08, 0.0), 0.02, bone * 0.75)  # fibula
        pen.ellipse((0.33, 0.44), 0.045, 0.09, bone, angle=0.2)  # patella, anterior


def _spine(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    soft, bone = t["soft"], t["bone"]
    n = 6
    bend = rng.uniform(-0.05, 0.05) if variant == "ap" else rng.uniform(0.05, 0.12)
    pen.rect((0.5, 0.5), 0.75, 1.2, soft)
    for k in range(n):
        y = 0.08 + k * 0.84 / (n - 1)
        if variant == "ap":
            x = 0.5 + bend * math.sin(math.pi * y)
            pen.rect((x, y), 0.24, 0.1, bone * 0.8)
            for side in (-1, 1):
                pen.capsule((x + side * 0.1, y - 0.01), (x + side * 0.2, y - 0.02), 0.012, bone * 0.85)  # transverse
                pen.ellipse((x + side * 0.075, y - 0.01), 0.022, 0.03, bone)  # pedicles
            pen.ellipse((x, y + 0.03), 0.018, 0.03, bone)  # spinous process, end-on
        else:
            x = 0.42 - bend * math.cos(math.pi * y)  # lordosis
            ang = -bend * math.pi * math.sin(math.pi * y) * 0.8
            pen.rect((x, y), 0.2, 0.11, bone * 0.8, angle=ang)
            pen.capsule((x + 0.1, y), (x + 0.27, y + 0.04), 0.025, bone * 0.75)  # spinous process, posterior
            pen.ellipse((x + 0.14, y - 0.03), 0.03, 0.025, bone * 0.85)  # facet


def _pelvis(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    soft, bone, bg = t["soft"], t["bone"], t["bg"]
    female = variant == "female"
    pen.ellipse((0.5, 0.55), 0.52, 0.45, soft)
    wing = 0.42 if female else 0.36
    for side in (-1, 1):  # iliac wings
        pen.poly(
            [
                (0.5 + side * 0.08, 0.25),
                (0.5 + side * wing, 0.18),
                (0.5 + side * (wing + 0.02), 0.3),
                (0.5 + side * 0.3, 0.58),
                (0.5 + side * 0.12, 0.55),
            ],
            bone * 0.75,
        )
    pen.poly([(0.42, 0.22), (0.58, 0.22), (0.5, 0.55)], bone * 0.85)  # sacrum
    if female:  # wide, round inlet
        pen.ellipse((0.5, 0.5), rng.uniform(0.2, 0.24), rng.uniform(0.12, 0.15), soft)
    else:  # narrow, heart-shaped inlet
        pen.ellipse((0.5, 0.5), rng.uniform(0.12, 0.15), rng.uniform(0.16, 0.19), soft)
        pen.poly([(0.44, 0.36), (0.56, 0.36), (0.5, 0.3)], bone * 0.85)
    arch = rng.uniform(0.17, 0.21) if female else rng.uniform(0.07, 0.1)
    for side in (-1, 1):
        pen.ellipse((0.5 + side * 0.3, 0.66), 0.075, 0.075, bone)  # femoral heads
        pen.capsule((0.5 + side * 0.32, 0.7), (0.5 + side * 0.4, 1.1), 0.055, bone * 0.9)  # femora
        pen.capsule((0.5 + side * 0.02, 0.8), (0.5 + side * 0.22, 0.68), 0.025, bone * 0.8)  # superior ramus
        pen.capsule((0.5 + side * 0.02, 0.84), (0.5 + side * (0.02 + arch), 0.95), 0.025, bone * 0.8)  # inferior ramus
        pen.ellipse((0.5 + side * (0.1 + arch / 3), 0.84), 0.045, 0.04, 0.5 * (soft + bg))  # obturator foramen


def _skull(pen: _Pen, rng: np.random.RandomState, variant: str, t: dict[str, float]) -> None:
    soft, bone, bg = t["soft"], t["bone"], t["bg"]
    dark = 0.5 * (soft + bg)
    if variant == "frontal":
        rx, ry = rng.uniform(0.33, 0.38), rng.uniform(0.36, 0.41)
        pen.ellipse((0.5, 0.45), rx, ry, bone * 0.9)
        pen.ellipse((0.5, 0.45), rx - 0.035, ry - 0.035, soft)
        for side in (-1, 1):
            pen.ellipse((0.5 + side * 0.13, 0.5), 0.075, 0.065, dark)  # orbits
        pen.poly([(0.5, 0.53), (0.45, 0.66), (0.55, 0.66)], dark)  # nasal cavity
        pen.polyline([(0.24, 0.6), (0.3, 0.8), (0.5, 0.9), (0.7, 0.8), (0.76, 0.6)], 0.025, bone)  # mandible
        for k in range(8):
            pen.ellipse((0.38 + k * 0.034, 0.74), 0.013, 0.022, bone)  # teeth
    else:
        rx, ry = rng.uniform(0.36, 0.41), rng.uniform(0.29, 0.34)
        pen.ellipse((0.56, 0.42), rx, ry, bone * 0.9)
        pen.ellipse((0.56, 0.42), rx - 0.035, ry - 0.035, soft)
        pen.ellipse((0.22, 0.47), 0.06, 0.07, dark)  # orbit
        pen.poly([(0.2, 0.55), (0.35, 0.55), (0.35, 0.7), (0.18, 0.68)], soft)  # maxilla
        pen.polyline([(0.62, 0.56), (0.6, 0.8), (0.32, 0.86), (0.2, 0.78)], 0.028, bone)  # mandible
        pen.ellipse((0.55, 0.5), 0.03, 0.025, dark)  # sella turcica
        for k in range(3):
            pen.rect((0.7, 0.86 + k * 0.09), 0.08, 0.06, bone * 0.8)  # cervical spine


_DRAW: dict[str, Callable[[_Pen, np.random.RandomState, str, dict[str, float]], None]] = {
    "chest": _chest,
    "hand": _hand,
    "knee": _knee,
    "spine": _spine,
    "pelvis": _pelvis,
    "skull": _skull,
}


def _draw_one(organ: str, variant: str, size: int, rng: np.random.RandomState) -> np.ndarray:
    tone = {
        "bg": rng.uniform(5, 25),
        "soft": rng.uniform(70, 105),
        "bone": rng.uniform(185, 235),
        "air": rng.uniform(25, 50),
    }
    big = 2 * size  # draw at twice the size, then downsample: anti-aliased edges
    pen = _Pen(
        big,
        rot=math.radians(rng.uniform(-12, 12)),
        scale=rng.uniform(0.85, 1.08),
        shift=rng.uniform(-0.06, 0.06, size=2),
        flip=organ == "hand" and variant == "right",
        fill=tone["bg"],
    )
    _DRAW[organ](pen, rng, variant, tone)
    img = pen.img.filter(ImageFilter.GaussianBlur(radius=big * rng.uniform(0.004, 0.01)))
    img = img.resize((size, size), Image.BOX)
    arr = np.asarray(img, dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    arr = arr + rng.uniform(-10, 10) * ramp[:, None]  # heel effect: brightness gradient
    arr = arr + rng.normal(0.0, rng.uniform(3.0, 8.0), size=arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def make_radiograph_phantoms(
    n_per_organ: int = 50,
    *,
    organs: Sequence[str] = ("chest", "hand", "knee", "spine", "pelvis", "skull"),
    image_size: int = 64,
    random_state: Any = None,
    return_variants: bool = True,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw synthetic radiograph-like images of several organs, with organ and variant labels.

    **These images are synthetic drawings, not radiographs.** They are simple geometric
    phantoms (bright bone, grey soft tissue, dark background and air, blur, noise, a random
    rotation/scale/shift per image) made for demonstrations, examples and tests: they have
    the two kinds of structure the Coda paper measures (Fig. 2), differences *between*
    organs and variants *within* an organ, so that both can be shown quickly on a CPU. Do not
    use them to judge a model for clinical images.

    Organs and their variants (see :data:`PHANTOM_ORGANS`):

    ============  ============================================================
    chest         ``frontal`` (two lungs, ribs, clavicles) / ``lateral``
    hand          ``left`` / ``right`` (mirror images), random finger spread and flexion
    knee          ``ap`` / ``lateral`` (flexed, patella in front)
    spine         ``ap`` (pedicles, mild scoliosis) / ``lateral`` (lordosis, spinous processes)
    pelvis        ``male`` (narrow heart-shaped inlet, narrow arch) / ``female`` (wide)
    skull         ``frontal`` (orbits, mandible) / ``lateral``
    ============  ============================================================

    Parameters
    ----------
    n_per_organ : int, default=50
        Images per organ, split as evenly as possible over its variants.
    organs : sequence of str, default=all six
        Which organs, in output order.
    image_size : int, default=64
        Side of the square images (at least 16).
    random_state : int, RandomState instance or None, default=None
        Seed; an int gives identical images on every call.
    return_variants : bool, default=True
        Also return the variant labels.

    Returns
    -------
    images : ndarray of shape (n_per_organ * len(organs), image_size, image_size), uint8
        Grouped by organ, in the order of ``organs``.
    organs : ndarray of str
        Organ label of each image.
    variants : ndarray of str
        Variant label of each image (only with ``return_variants=True``).

    Examples
    --------
    >>> from codafeat.phantoms import make_radiograph_phantoms
    >>> X, organ, variant = make_radiograph_phantoms(4, organs=("chest", "hand"), random_state=0)
    >>> X.shape, X.dtype, sorted(set(variant[organ == "hand"].tolist()))
    ((8, 64, 64), dtype('uint8'), ['left', 'right'])
    >>> organ.tolist()
    ['chest', 'chest', 'chest', 'chest', 'hand', 'hand', 'hand', 'hand']
    """
    if isinstance(n_per_organ, bool) or not isinstance(n_per_organ, (int, np.integer)) or n_per_organ < 1:
        raise ValueError(f"n_per_organ must be an integer >= 1, got {n_per_organ!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    if isinstance(organs, str):
        organs = (organs,)
    organs = tuple(organs)
    if not organs:
        raise ValueError("organs is empty")
    unknown = [o for o in organs if o not in PHANTOM_ORGANS]
    if unknown:
        raise ValueError(f"unknown organ(s) {unknown} in organs; available: {list(PHANTOM_ORGANS)}")
    dupes = [o for o, c in Counter(organs).items() if c > 1]
    if dupes:
        raise ValueError(f"organs lists {dupes} more than once")
    rng = check_random_state(random_state)
    n = int(n_per_organ) * len(organs)
    images = np.empty((n, image_size, image_size), dtype=np.uint8)
    organ_labels: list[str] = []
    variant_labels: list[str] = []
    i = 0
    for organ in organs:
        names = PHANTOM_ORGANS[organ]
        order = rng.permutation(np.arange(n_per_organ) % len(names))
        for v in order:
            images[i] = _draw_one(organ, names[v], int(image_size), rng)
            organ_labels.append(organ)
            variant_labels.append(names[v])
            i += 1
    organ_arr, variant_arr = np.array(organ_labels), np.array(variant_labels)
    return (images, organ_arr, variant_arr) if return_variants else (images, organ_arr)
