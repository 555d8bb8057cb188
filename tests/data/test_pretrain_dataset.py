"""Tests for codafeat.data.pretrain_dataset: per-(seed, epoch, index) views and crop-major batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from codafeat.data.cache.decoded import DecodedCache
from codafeat.data.pretrain_dataset import MultiCropDataset, collate_views, view_seed
from codafeat.data.views import MultiCropViews

N_LOCAL = 3


@pytest.fixture(scope="module")
def cache() -> DecodedCache:
    rng = np.random.default_rng(0)
    return DecodedCache.build([rng.integers(0, 256, (30, 30), dtype=np.uint8) for _ in range(6)], 20)


@pytest.fixture()
def views() -> MultiCropViews:
    return MultiCropViews(image_size=16, local_size=8, n_local_crops=N_LOCAL)


def make(cache, views, seed=0) -> MultiCropDataset:
    return MultiCropDataset(cache, np.array([0, 1, 2, 0, 1, 2]), views, seed=seed)


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))


def test_item_shapes_label_and_index(cache, views):
    ds = make(cache, views)
    assert len(ds) == 6
    g1, g2, loc, label, i = ds[4]
    assert g1.shape == g2.shape == (1, 16, 16) and loc.shape == (N_LOCAL, 1, 8, 8)
    assert g1.dtype == torch.float32 and (label, i) == (1, 4)
    assert ds[-1][4] == 5
    with pytest.raises(IndexError):
        ds[6]


def test_views_are_those_of_the_seeded_generator(cache, views):
    """Item i of epoch e is views(image i, generator seeded from (seed, e, i)): an independent recomputation."""
    ds = make(cache, views, seed=11)
    ds.set_epoch(3)
    g = torch.Generator().manual_seed(view_seed(11, 3, 2))
    ref = views(torch.from_numpy(np.array(cache[2])), g)
    assert same(ds[2], ref)


def test_reproducible_per_seed_epoch_index(cache, views):
    ds = make(cache, views)
    a = ds[1]
    assert same(a, ds[1])  # repeatable, independent of call order
    ds[0], ds[2]
    assert same(a, ds[1])
    resumed = make(cache, views)  # a fresh object (e.g. a resumed run) gives the same views
    assert same(a, resumed[1])
    ds.set_epoch(1)
    assert not same(a, ds[1])
    ds.set_epoch(0)
    assert same(a, ds[1])
    assert not same(a, make(cache, views, seed=1)[1])


def test_view_seed_distinct():
    seeds = {view_seed(s, e, i) for s in range(3) for e in range(10) for i in range(50)}
    assert len(seeds) == 3 * 10 * 50
    assert view_seed(0, 1, 2) == view_seed(0, 1, 2)


def test_collate_shapes_and_crop_major_order(cache, views):
    ds = make(cache, views)
    items = [ds[i] for i in (5, 0, 3)]
    batch = collate_views(items)
    B = 3
    assert batch["g1"].shape == (B, 1, 16, 16) and batch["g2"].shape == (B, 1, 16, 16)
    assert batch["locals"].shape == (N_LOCAL * B, 1, 8, 8)
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [2, 0, 0]
    assert batch["index"].dtype == torch.int64 and batch["index"].tolist() == [5, 0, 3]
    for k in range(N_LOCAL):
        for b in range(B):
            assert torch.equal(batch["locals"][k * B + b], items[b][2][k])
        assert torch.equal(batch["locals"].view(N_LOCAL, B, 1, 8, 8)[k, 1], items[1][2][k])
    for b in range(B):
        assert torch.equal(batch["g1"][b], items[b][0]) and torch.equal(batch["g2"][b], items[b][1])


def test_dataloader_workers_give_the_same_batches(cache, views):
    ds = make(cache, views)
    ds.set_epoch(2)
    serial = list(DataLoader(ds, batch_size=4, collate_fn=collate_views, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=4, collate_fn=collate_views, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_labels_are_checked(cache, views):
    with pytest.raises(ValueError, match="one label per cached image"):
        MultiCropDataset(cache, np.zeros(5, dtype=int), views)
    with pytest.raises(ValueError, match="integers"):
        MultiCropDataset(cache, np.array(["chest"] * 6), views)


def test_collate_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        collate_views([])
