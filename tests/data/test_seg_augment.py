"""Masks, pair resizing and joint image/mask augmentation (codafeat/data/seg_augment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codafeat.data.seg_augment import (
    SegAugment,
    encode_mask,
    load_mask,
    resize_mask,
    resize_pair,
)

from helpers import shapes_dataset


def test_mask_reading_rules(tmp_path):
    m = np.array([[0, 255], [255, 0]], np.uint8)
    assert encode_mask(m, 2, name="m").tolist() == [[0, 1], [1, 0]]
    assert encode_mask(np.array([[0, 1, 2]]), 3, name="m").tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="outside"):
        encode_mask(np.array([[0, 3]]), 3, name="m")
    assert load_mask(np.array([[True, False]])).tolist() == [[1, 0]]
    assert load_mask(np.array([[0.0, 2.0]])).tolist() == [[0, 2]]
    with pytest.raises(ValueError, match="whole-number"):
        load_mask(np.array([[0.0, 0.5]]), index=4)
    rgb = np.stack([m, m, m], -1)
    assert load_mask(rgb).tolist() == m.tolist()
    rgb[0, 0, 1] = 7
    with pytest.raises(ValueError, match="colour mask"):
        load_mask(rgb)
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    assert load_mask(str(tmp_path / "p.png")).tolist() == [[0, 1], [2, 1]]
    Image.fromarray(m).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match="JPEG"):
        load_mask(str(tmp_path / "m.jpg"))


def test_resize_pair_uses_nearest_for_masks():
    img = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
    mask = np.zeros((40, 30), np.uint8)
    mask[10:30, 5:25] = 2
    mask[20:30, 5:15] = 1
    ri, rm = resize_pair(img, mask, 64)
    assert ri.shape == rm.shape == (64, 64) and ri.dtype == np.float32
    assert set(np.unique(rm).tolist()) == {0, 1, 2}  # no blended labels
    assert resize_mask(mask, 40)[8:12].shape == (4, 40)
    with pytest.raises(ValueError, match="differ"):
        resize_pair(img, mask[:, :20], 64)


# --------------------------------------------------------------------------- augmentation
def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_identity_augmentation_is_exact():
    aug = SegAugment(scale=(1, 1), rotation=0, translate=0, contrast=0, brightness=0, gamma=(1, 1))
    x = torch.rand(3, 1, 32, 40)
    y = torch.randint(0, 3, (3, 32, 40))
    xa, ya = aug(x, y, generator=_gen())
    torch.testing.assert_close(xa, x, atol=1e-6, rtol=0)
    assert torch.equal(ya, y)


def test_image_and_mask_get_the_same_geometry():
    _, Y = shapes_dataset(6, 48, 64, seed=5)
    y = torch.from_numpy(Y).long()
    x = y.unsqueeze(1).float()  # image == mask: geometry must keep them aligned
    aug = SegAugment(scale=(0.8, 1.25), rotation=25, translate=0.1, hflip=True, contrast=0, brightness=0, gamma=(1, 1))
    xa, ya = aug(x, y, generator=_gen(1))
    agree = ((xa[:, 0] > 0.5).long() == ya).float().mean()
    assert agree > 0.98
    assert not torch.equal(ya, y)  # something happened
    assert set(torch.unique(ya).tolist()) <= {0, 1}


def test_no_horizontal_flip_by_default():
    aug = SegAugment()
    assert aug.hflip is False
    theta = aug.affine(200, 32, 32, generator=_gen(), device=torch.device("cpu"))
    assert (theta[:, 0, 0] > 0).all()  # rotation <= 10 deg, no mirror
    flip = SegAugment(hflip=True).affine(200, 32, 32, generator=_gen(), device=torch.device("cpu"))
    assert (flip[:, 0, 0] < 0).any() and (flip[:, 0, 0] > 0).any()


def test_augmentation_is_seeded_and_intensity_stays_in_range():
    x = torch.rand(4, 1, 32, 32)
    y = torch.randint(0, 2, (4, 32, 32))
    aug = SegAugment(noise=0.05)
    a = aug(x, y, generator=_gen(7))
    b = aug(x, y, generator=_gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= 0 and a[0].max() <= 1
    assert SegAugment.from_param(False) is None and SegAugment.from_param(True) == SegAugment()
    assert SegAugment.from_param({"rotation": 5, "scale": [0.9, 1.0]}).scale == (0.9, 1.0)
    with pytest.raises(ValueError, match="scale"):
        SegAugment(scale=(1.2, 1.0))
