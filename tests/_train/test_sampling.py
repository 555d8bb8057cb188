"""GlobalBatchSampler (codafeat/_train/sampling.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codafeat._train.sampling import GlobalBatchSampler


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 60),
    batch=st.integers(1, 4),
    world=st.integers(1, 4),
    seed=st.integers(0, 99),
    epoch=st.integers(0, 5),
)
def test_ranks_split_the_same_global_batches(n, batch, world, seed, epoch):
    if batch * world > n:
        with pytest.raises(ValueError, match="exceeds"):
            GlobalBatchSampler(n, batch, world_size=world, seed=seed)
        return
    single = GlobalBatchSampler(n, batch * world, seed=seed)
    ranks = [GlobalBatchSampler(n, batch, world_size=world, rank=r, seed=seed) for r in range(world)]
    for s in [single, *ranks]:
        s.set_epoch(epoch)
    per_rank = [list(s) for s in ranks]
    assert all(len(b) == len(single) for b in per_rank)
    for step, global_batch in enumerate(single):
        assert sum((per_rank[r][step] for r in range(world)), []) == global_batch
    seen = [i for batch_ in single for i in batch_]
    assert len(seen) == len(set(seen)) == len(single) * batch * world  # no image twice; the tail dropped


def test_epochs_differ_and_repeat():
    s = GlobalBatchSampler(20, 5, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first
