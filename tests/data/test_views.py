"""Tests for codafeat.data.views: multi-crop views of one-channel radiographs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codafeat.data.views import MultiCropViews

# A view pipeline that only crops/resizes: no rotation, jitter or blur.
PLAIN = dict(rotation=0.0, brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), blur_prob=0.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def asymmetric_image(h: int = 24, w: int = 24) -> torch.Tensor:
    """A float image whose left and right halves differ (a bright bar on the left)."""
    img = torch.linspace(0.1, 0.5, w).repeat(h, 1)
    img[:, 2:5] = 0.95
    img[3:6, :] = 0.02
    return img[None]


# --------------------------------------------------------------------------- basics
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shapes_dtypes_and_range(dtype):
    views = MultiCropViews(image_size=32, local_size=16, n_local_crops=5)
    img = torch.randint(0, 256, (1, 50, 40), dtype=torch.uint8)
    if dtype == torch.float32:
        img = img.float() / 255
    g1, g2, loc = views(img, gen(0))
    assert g1.shape == (1, 32, 32) and g2.shape == (1, 32, 32)
    assert loc.shape == (5, 1, 16, 16)
    for v in (g1, g2, loc):
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert v.min() >= 0 and v.max() <= 1


def test_defaults_are_the_papers():
    v = MultiCropViews()
    assert (v.image_size, v.local_size, v.n_local_crops, v.local_scale) == (224, 96, 12, (0.4, 0.7))
    assert v.global_scale == (0.4, 1.0) and v.blur_prob == (1.0, 0.1, 0.5) and v.hflip is False
    g1, g2, loc = v(torch.randint(0, 256, (1, 256, 256), dtype=torch.uint8), gen(0))
    assert g1.shape == (1, 224, 224) and loc.shape == (12, 1, 96, 96)


def test_same_generator_seed_same_views_other_seed_different():
    views = MultiCropViews(image_size=24, local_size=12, n_local_crops=4)
    img = torch.rand(1, 40, 40)
    a = views(img, gen(7))
    b = views(img, gen(7))
    c = views(img, gen(8))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[2], c[2])
    # The two global views of one call differ from each other.
    assert not torch.equal(a[0], a[1])


def test_generator_advances_by_a_fixed_amount():
    """Each call consumes the same randomness whatever the draws (needed for replay)."""
    views = MultiCropViews(image_size=16, local_size=8, n_local_crops=3)
    g = gen(3)
    views(torch.rand(1, 30, 20), g)
    after = torch.rand(1, generator=g)
    g2 = gen(3)
    views.sample(30, 20, g2)
    assert torch.equal(after, torch.rand(1, generator=g2))


def test_one_crop_is_the_fewest_as_for_the_pretrainer():
    from codafeat._defaults import MIN_LOCAL_CROPS, PRETRAIN_PARAMS

    assert PRETRAIN_PARAMS["n_local_crops"].accepts[0][1] == MIN_LOCAL_CROPS == 1
    g1, g2, loc = MultiCropViews(image_size=8, local_size=4, n_local_crops=1)(torch.rand(1, 10, 10), gen(0))
    assert g1.shape == (1, 8, 8) and loc.shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="n_local_crops must be an integer >= 1"):
        MultiCropViews(image_size=8, local_size=4, n_local_crops=0)


# --------------------------------------------------------------------------- flips
def test_no_horizontal_flip_by_default():
    img = asymmetric_image()
    views = MultiCropViews(
        image_size=24, local_size=24, n_local_crops=2, global_scale=(1, 1), local_scale=(1, 1), **PLAIN
    )
    for seed in range(20):
        g1, g2, loc = views(img, gen(seed))
        for v in (g1, g2, loc[0], loc[1]):
            torch.testing.assert_close(v, img, atol=1e-5, rtol=0)


def test_hflip_option_flips_some_views():
    img = asymmetric_image()
    views = MultiCropViews(
        image_size=24, local_size=24, n_local_crops=2, global_scale=(1, 1), local_scale=(1, 1), hflip=True, **PLAIN
    )
    flipped = kept = 0
    for seed in range(20):
        for v in views(img, gen(seed))[:2]:
            if torch.allclose(v, img.flip(-1), atol=1e-5):
                flipped += 1
            elif torch.allclose(v, img, atol=1e-5):
                kept += 1
    assert flipped + kept == 40
    assert 8 <= flipped <= 32  # p = 0.5 over 40 views


# --------------------------------------------------------------------------- crop boxes
@pytest.mark.parametrize("shape", [(256, 256), (100, 300), (300, 90)])
def test_crop_boxes_respect_scale_and_ratio(shape):
    h, w = shape
    views = MultiCropViews(n_local_crops=12)
    g = gen(0)
    areas_g, areas_l = [], []
    for _ in range(200):
        p = views.sample(h, w, g)
        top, left, bh, bw = p.boxes.T
        assert np.all(top >= -1e-9) and np.all(left >= -1e-9)
        assert np.all(top + bh <= h + 1e-9) and np.all(left + bw <= w + 1e-9)
        areas_g.extend(bh[:2] * bw[:2] / (h * w))
        areas_l.extend(bh[2:] * bw[2:] / (h * w))
        aspect = bw / bh
        assert np.all(aspect >= 3 / 4 - 1e-9) and np.all(aspect <= 4 / 3 + 1e-9)
    areas_g, areas_l = np.array(areas_g), np.array(areas_l)
    if h == w:  # the fallback (largest centred box within the ratio range) is for elongated images
        assert areas_g.min() >= 0.4 - 1e-9 and areas_g.max() <= 1.0 + 1e-9
        assert areas_g.max() - areas_g.min() > 0.4  # the ranges are actually explored
        assert areas_l.max() - areas_l.min() > 0.25
    assert areas_l.min() >= 0.4 - 1e-9 and areas_l.max() <= 0.7 + 1e-9


def test_blur_probabilities_and_sigma_range():
    views = MultiCropViews(image_size=112, n_local_crops=12)
    g = gen(1)
    sig = np.stack([views.sample(64, 64, g).sigmas for _ in range(2000)])
    assert np.all(sig[:, 0] > 0)  # g1: p = 1.0
    assert abs((sig[:, 1] > 0).mean() - 0.1) < 0.03
    assert abs((sig[:, 2:] > 0).mean() - 0.5) < 0.02
    on = sig[sig > 0]
    scale = 112 / 224  # DINO's sigmas are pixels of a 224-px view
    assert on.min() >= 0.1 * scale - 1e-9 and on.max() <= 2.0 * scale + 1e-9


def test_jitter_factor_ranges():
    views = MultiCropViews(n_local_crops=12)
    g = gen(2)
    ps = [views.sample(64, 64, g) for _ in range(500)]
    b = np.concatenate([p.brightness for p in ps])
    gam = np.concatenate([p.gamma for p in ps])
    assert b.min() >= 0.6 - 1e-9 and b.max() <= 1.4 + 1e-9
    assert gam.min() >= 0.8 - 1e-9 and gam.max() <= 1.2 + 1e-9
    assert abs((b == 1.0).mean() - 0.2) < 0.03  # jitter applied with p = 0.8
    ang = np.concatenate([p.angles for p in ps])
    assert ang.min() >= -10 and ang.max() <= 10 and ang.max() - ang.min() > 15


def _reference_view(lin, box, angle, flip, size):
    """Value of the linear image ``lin(x, y)`` at each output pixel's source point (straight math)."""
    top, left, bh, bw = box
    cx, cy = left + bw / 2, top + bh / 2
    u = (2 * np.arange(size) + 1) / size - 1
    uu, vv = np.meshgrid(u, u)  # uu varies along columns (x), vv along rows (y)
    if flip:
        uu = -uu
    dx, dy = uu * bw / 2, vv * bh / 2
    t = math.radians(angle)
    x = cx + math.cos(t) * dx - math.sin(t) * dy
    y = cy + math.sin(t) * dx + math.cos(t) * dy
    return lin(x, y), x, y


@pytest.mark.parametrize("hflip", [False, True])
def test_views_sample_the_rotated_crop_box(hflip):
    """Bilinear sampling (and 2x average pooling) of a linear image is exact: compare with geometry."""
    h, w = 120, 160

    def lin(x, y):  # in continuous pixel coordinates (pixel (r, c) has its centre at (c + .5, r + .5))
        return 0.1 + 0.003 * x + 0.002 * y

    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    img = torch.from_numpy(lin(xs, ys).astype(np.float32))[None]
    # locals of 12 px from ~40-60 px boxes use pyramid level 2; globals of 40 px use level 0.
    views = MultiCropViews(
        image_size=40,
        local_size=12,
        n_local_crops=6,
        global_scale=(0.1, 0.2),
        local_scale=(0.1, 0.2),
        rotation=30.0,
        brightness=0,
        contrast=0,
        gamma=(1, 1),
        blur_prob=0,
        hflip=hflip,
    )
    checked = 0
    for seed in range(10):
        p = views.sample(h, w, gen(seed))
        g1, g2, loc = views(img, gen(seed))
        outs = [g1[0], g2[0]] + [loc[k, 0] for k in range(6)]
        for k, out in enumerate(outs):
            size = out.shape[-1]
            ref, x, y = _reference_view(lin, p.boxes[k], p.angles[k], p.flips[k], size)
            inside = (x > 4) & (x < w - 4) & (y > 4) & (y < h - 4)  # away from the edges
            np.testing.assert_allclose(out.numpy()[inside], ref[inside], atol=2e-4)
            checked += inside.sum()
    assert checked > 10000
    assert np.any([views.sample(h, w, gen(s)).flips.any() for s in range(10)]) == hflip


def test_rotation_pads_outside_the_image_with_black_but_edges_are_not_darkened():
    img = torch.ones(1, 16, 16)
    views = MultiCropViews(image_size=32, local_size=8, n_local_crops=1, global_scale=(1, 1), ratio=(1, 1), **PLAIN)
    p = views.sample(16, 16, gen(0))
    g1, g2, _ = views.apply(img, replace(p, angles=np.array([45.0, 0.0, 0.0])))
    assert g1[0, 0, 0] == 0 and g1[0, -1, -1] == 0  # corners of the rotated box lie outside the image
    assert g1[0, 16, 16] == 1
    # upsampling the whole image: the border pixels keep their value (no blend with the padding)
    torch.testing.assert_close(g2, torch.ones(1, 32, 32))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=0), "image_size"),
        (dict(local_size=2.5), "local_size"),
        (dict(n_local_crops=-1), "n_local_crops"),
        (dict(global_scale=(0.5, 1.5)), "global_scale"),
        (dict(local_scale=(0.7, 0.4)), "local_scale"),
        (dict(rotation=-1), "rotation"),
        (dict(gamma=(0, 1)), "gamma"),
        (dict(blur_prob=(1.0, 0.1)), "blur_prob"),
        (dict(blur_prob=1.5), "blur_prob"),
        (dict(jitter_prob=2), "jitter_prob"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MultiCropViews(**kwargs)


def test_bad_images_raise():
    views = MultiCropViews(image_size=8, local_size=4, n_local_crops=1)
    with pytest.raises(ValueError, match="one-channel"):
        views(torch.rand(3, 10, 10), gen(0))
    with pytest.raises(TypeError, match="dtype"):
        views(torch.ones(1, 10, 10, dtype=torch.int32), gen(0))


# --------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    dtype=st.sampled_from(["uint8", "float32", "float64"]),
    image_size=st.integers(1, 24),
    local_size=st.integers(1, 16),
    n_local=st.integers(1, 3),
    rotation=st.floats(0, 180),
    hflip=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_views_always_finite_in_range_right_shape(h, w, dtype, image_size, local_size, n_local, rotation, hflip, seed):
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        img = torch.from_numpy(rng.integers(0, 256, (1, h, w), dtype=np.uint8))
    else:
        img = torch.from_numpy(rng.random((1, h, w)).astype(dtype))
    views = MultiCropViews(
        image_size=image_size, local_size=local_size, n_local_crops=n_local, rotation=rotation, hflip=hflip
    )
    g1, g2, loc = views(img, gen(seed))
    assert g1.shape == g2.shape == (1, image_size, image_size)
    assert loc.shape == (n_local, 1, local_size, local_size)
    for v in (g1, g2, loc):
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert v.numel() == 0 or (v.min() >= 0 and v.max() <= 1)
