"""Writing the shards of the decoded cache that are not on disk yet (the foreground build).

:func:`write_missing_shards` finds the shards of a set that are complete on disk, decodes
the others in parallel (copying images from replaced shards where it can), holds a lease
on them until the set index names them, writes that index, and removes the shards no
index or live run uses. :meth:`codafeat.data.cache.decoded.DecodedCache.build` calls it;
the background fill (:mod:`codafeat.data.cache.background_fill`) writes the same shards from a
separate process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import io as _io
from . import leases as _leases
from . import shards as _shards

logger = logging.getLogger(__name__)

__all__ = ["write_missing_shards"]


def write_missing_shards(
    items: Sequence[Any],
    ids: Sequence[bytes],
    size: int,
    cache_dir: Path,
    key: str,
    on_error: str,
    num_workers: int,
    verbose: int,
    bit_depth: int | None = None,
) -> None:
    """Decode the shards of set ``key`` that are not on disk yet, then write the set index.

    Raises
    ------
    ImageReadError
        An input cannot be read and ``on_error="raise"``.
    ValueError
        None of the inputs can be read (no shard is left behind).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    layout = _shards.layout(ids, size, bit_depth)
    present = _shards.complete_shards(cache_dir, layout)
    missing = [s for s in range(len(layout)) if s not in present]
    todo = _shards.jobs_for(
        cache_dir,
        layout,
        {
            s: (
                [items[i] for i in range(*layout[s][:2])],
                [_shards.item_digest(ids[i]) for i in range(*layout[s][:2])],
            )
            for s in missing
        },
        size,
        bit_depth,
        on_error,
    )
    logger.info(
        "decoded cache %s: %d of %d shard(s) to write (%d of %d images, %d of them copied from replaced shards)",
        cache_dir,
        len(todo),
        len(layout),
        sum(len(j.items) for j in todo),
        len(items),
        sum(len(j.donors) for j in todo),
    )
    # the lease keeps another run's cleanup off these shards until the set index names them
    with _leases.lease(cache_dir, [skey for _, _, skey in layout]):
        for meta in _shards.fill(todo, num_workers, verbose):
            if "error" in meta:
                raise _io.ImageReadError(*meta["error"])
        if all(not _shards.open_shard(cache_dir, skey, verify=False)[1]["kept"] for _, _, skey in layout):
            for _, _, skey in layout:  # nothing readable: leave no cache behind
                for p in _shards.paths(cache_dir, skey):
                    p.unlink(missing_ok=True)
            raise ValueError(f"none of the {len(items)} images could be read")
        _shards.write_set_index(cache_dir, key, size, len(items), layout)
    removed = _shards.remove_unreferenced(cache_dir)
    if removed:
        logger.info("decoded cache %s: removed %d file(s) of shards no index or live run uses", cache_dir, len(removed))
