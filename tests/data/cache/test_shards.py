"""The sharded store of the decoded cache (codafeat/data/shards.py): identities, bounds, keys.

Building, reusing, damaging and refilling shards through the cache is tested in
tests/data/test_decoded_cache.py; these are the properties the store rests on.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from codafeat.data.cache import shards as S

IDS = st.lists(st.binary(min_size=1, max_size=12), max_size=400)


@given(IDS, st.integers(2, 50), st.integers(1, 80))
def test_bounds_cover_every_input_once_within_the_limit(ids, target, limit):
    b = S.bounds(ids, target=target, limit=limit)
    assert [i for lo, hi in b for i in range(lo, hi)] == list(range(len(ids)))
    assert all(0 < hi - lo <= limit for lo, hi in b)


@given(IDS, st.binary(min_size=1, max_size=12), st.integers(0, 400))
def test_an_insertion_moves_at_most_two_shard_bounds(ids, new, at):
    """Content-defined bounds: inserting one input changes the shard it falls into and the one after."""
    at = min(at, len(ids))
    before = S.bounds(ids, target=8, limit=10_000)
    after = S.bounds(ids[:at] + [new] + ids[at:], target=8, limit=10_000)
    kept = {(lo, hi) for lo, hi in before if hi <= at} | {(lo + 1, hi + 1) for lo, hi in before if lo > at}
    assert len(set(after) - kept) <= 2, "only the shards around the new input are new"


def test_identity_follows_path_size_and_mtime_or_array_content(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"abc")
    first = S.identity(str(p), 0)
    assert S.identity(p, 5) == first, "a path is a path, whatever its position"
    st_ = os.stat(p)
    os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    assert S.identity(str(p), 0) != first
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert S.identity(a, 0) == S.identity(a.copy(), 9) != S.identity(a.T.copy(), 0)


def test_a_shard_key_names_its_inputs_size_and_intensity_rule():
    ids = [b"a", b"b"]
    key = S.shard_key(ids, 64, None)
    assert key == S.shard_key(list(ids), 64, None)
    assert (
        len(
            {
                key,
                S.shard_key(ids, 32, None),
                S.shard_key(ids, 64, 12),
                S.shard_key(ids[::-1], 64, None),
                S.shard_key(ids[:1], 64, None),
            }
        )
        == 5
    )
