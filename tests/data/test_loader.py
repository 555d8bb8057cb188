"""Streaming batches: dataset, collation, failures, the worker policy, and in-model scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codafeat.data import loader as L
from codafeat.data.io import ImageReadError, load_image
from codafeat.nn.preprocess import GrayToInput


def test_dataset_items_are_decoded_lazily_and_failures_returned(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(np.full((20, 10), 9, np.uint8)).save(good)
    ds = L.ImageDataset([str(good), str(tmp_path / "missing.png"), np.ones((5, 5), np.float32) * 0.5], size=8)
    assert len(ds) == 3
    img, i, failure, shape, kind = ds[0]
    assert img.dtype == np.uint8 and img.shape == (8, 8) and i == 0 and failure is None
    assert shape is None and kind == "8bit"
    img, i, failure, _, kind = ds[1]  # never raises: the caller decides
    assert failure == L.Failure(1, str(tmp_path / "missing.png"), "no such file") and (img == 0).all() and kind == ""
    img, _, _, _, kind = ds[2]
    assert img.dtype == np.float32 and kind == "unit"
    wide = L.ImageDataset([np.array([[0, 2000], [4000, 1000]], np.uint16)], size=2, with_shapes=True, bit_depth=12)
    img, _, _, shape, kind = wide[0]
    assert kind == "fixed" and shape == (2, 2) and img.max() == pytest.approx(4000 / 4095)


def test_collate_keeps_uint8_and_promotes_mixed_batches():
    a = np.full((4, 4), 51, np.uint8)
    f = np.full((4, 4), 0.5, np.float32)
    batch = L.collate_images([(a, 3, None, None, "8bit"), (a, 4, None, None, "8bit")])
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (2, 1, 4, 4)
    assert batch.index.tolist() == [3, 4] and batch.failures == [] and batch.kinds == ("8bit", "8bit")
    fail = L.Failure(6, "x.png", "broken")
    mixed = L.collate_images([(a, 5, None, None, "8bit"), (f, 6, fail, None, "")])
    assert mixed.images.dtype == torch.float32
    torch.testing.assert_close(mixed.images[0, 0], torch.full((4, 4), 51 / 255))
    torch.testing.assert_close(mixed.images[1, 0], torch.full((4, 4), 0.5))
    assert mixed.failures == [fail]


def test_raise_failure_gives_the_image_read_error():
    with pytest.raises(ImageReadError, match="x.png.*broken") as info:
        L.raise_failure(L.Failure(0, "x.png", "broken"))
    assert info.value.path == "x.png"


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_every_image_once_in_order(tmp_path, workers):
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((12, 12), i * 30, np.uint8)).save(p)
        paths.append(str(p))
    batches = list(L.make_loader(paths, 6, batch_size=3, num_workers=workers))
    assert [len(b.index) for b in batches] == [3, 3, 1]
    index = torch.cat([b.index for b in batches]).tolist()
    assert index == list(range(7))
    images = torch.cat([b.images for b in batches])
    for i, p in enumerate(paths):
        np.testing.assert_allclose(images[i, 0].numpy() / 255, load_image(p, size=6), atol=1e-7)


def test_is_in_memory():
    assert L.is_in_memory(np.zeros((2, 4, 4)))
    assert L.is_in_memory([np.zeros((4, 4))])
    assert not L.is_in_memory(["a.png"])
    assert not L.is_in_memory(np.array(["a.png"]))
    assert not L.is_in_memory([])


def test_auto_num_workers_policy(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(L, "available_cpus", lambda: 16)
    assert L.auto_num_workers(1000, 32, cpu, in_memory=True) == 0  # nothing to decode
    assert L.auto_num_workers(20, 32, cpu, in_memory=False) == 0  # one batch: workers cost more
    assert L.auto_num_workers(1000, 32, cuda, in_memory=False) == 8
    assert L.auto_num_workers(1000, 32, cuda, in_memory=True) == 0
    monkeypatch.setattr(L, "available_cpus", lambda: 4)
    assert L.auto_num_workers(1000, 32, cuda, in_memory=False) == 3
    assert L.auto_num_workers(1000, 32, cpu, in_memory=False) == L.PROBE  # time the first batch
    monkeypatch.setattr(L, "available_cpus", lambda: 1)
    assert L.auto_num_workers(1000, 32, cuda, in_memory=False) == 0  # nothing to overlap with
    assert L.auto_num_workers(1000, 32, cpu, in_memory=False) == 0


def test_workers_after_probe(monkeypatch):
    monkeypatch.setattr(L, "available_cpus", lambda: 4)
    assert L.workers_after_probe(0.01, 1.0) == 0  # cheap decoding (224-px PNGs): serial is fine
    assert L.workers_after_probe(0.6, 1.0) == 2  # at least two once decoding matters
    assert L.workers_after_probe(2.5, 1.0) == 3  # ceil(2.5)
    assert L.workers_after_probe(50.0, 1.0) == 4  # at most the cores
    monkeypatch.setattr(L, "available_cpus", lambda: 64)
    assert L.workers_after_probe(50.0, 1.0) == 8  # and 8
    monkeypatch.setattr(L, "available_cpus", lambda: 2)
    assert L.workers_after_probe(2.5, 1.0) == 2
    assert L.workers_after_probe(1.0, 0.0) == 0


def test_loader_over_a_range(tmp_path):
    X = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    batches = list(L.make_loader(X, 4, batch_size=3, num_workers=0, start=2, stop=7))
    assert torch.cat([b.index for b in batches]).tolist() == [2, 3, 4, 5, 6]
    assert torch.cat([b.images[:, 0, 0, 0] for b in batches]).tolist() == [2, 3, 4, 5, 6]


def test_available_cpus_is_positive():
    assert L.available_cpus() >= 1


# --------------------------------------------------------------------------- GrayToInput
@pytest.mark.parametrize("channels_last", [False, True])
def test_gray_to_input_scales_uint8_and_matches_float(channels_last):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pre = GrayToInput(mean, std, 3, channels_last=channels_last)
    x8 = torch.randint(0, 256, (2, 1, 5, 6), dtype=torch.uint8)
    xf = x8.float() / 255
    ref = (xf.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for x in (x8, xf):
        out = pre(x)
        assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 6)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_gray_to_input_checks():
    with pytest.raises(ValueError, match="3 values"):
        GrayToInput((0.5,), (0.5,), 3)
    with pytest.raises(ValueError, match="positive"):
        GrayToInput((0.5,) * 3, (0.5, 0.0, 0.5), 3)
    pre = GrayToInput((0.5,), (0.25,), 1)
    torch.testing.assert_close(pre(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="expected input"):
        pre(torch.zeros(1, 2, 2, 2))
