"""The background fill: a separate process that writes a run's missing decoded-cache shards.

:meth:`codafeat.data.cache.decoded.DecodedCache.build` with ``wait=False`` starts it
(:func:`fill_in_background`) and training begins at once; images the fill has not written
yet are decoded on access. The job travels as a JSON file in ``cache_dir`` and the result as
the shard files themselves, so that the two processes share no thread, lock or pipe but
stderr. This module imports no torch: the fill process starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._fileio import atomic_write_bytes
from .. import io as _io
from . import shards as _shards
from .leases import holder


def start(
    items: Sequence[Any],
    ids: Sequence[bytes],
    size: int,
    cache_dir: Path,
    key: str,
    bit_depth: int | None,
    num_workers: int,
) -> tuple[list, list, dict, Counter, Any]:
    """Find the shards of ``items`` already on disk and start the fill of the others.

    Returns the layout, ``(data file, images)`` of every shard, the pending shards
    (``index -> (key, paths)``), the intensity kinds of the complete ones, and the process.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    layout = _shards.layout(ids, size, bit_depth)
    present = _shards.complete_shards(cache_dir, layout)
    files, pending, kinds = [], {}, Counter()
    for s, (lo, hi, skey) in enumerate(layout):
        if s in present:
            files.append((_shards.paths(cache_dir, skey)[0], present[s][0]))
            kinds.update(present[s][1])
        else:
            files.append((_shards.paths(cache_dir, skey)[0], hi - lo))  # size known: no input is skipped
            pending[s] = (skey, [os.fspath(items[i]) for i in range(lo, hi)])
    proc = fill_in_background(cache_dir, key, layout, pending, size, bit_depth, num_workers, ids)
    return layout, files, pending, kinds, proc


def fill_in_background(
    cache_dir: Path,
    key: str,
    layout: list,
    pending: dict[int, tuple[str, list[str]]],
    size: int,
    bit_depth: int | None,
    num_workers: int,
    ids: Sequence[bytes],
) -> Any:
    """Start a process that writes the ``pending`` shards and then the set index; returns its ``Popen``.

    The job travels as a JSON file in ``cache_dir`` (file paths, and the digests of their
    identities ``ids``; it names this process, so that it is also the run's lease on its
    shards, see :mod:`codafeat.data.cache.leases`), and the result as the files themselves: the parent process shares
    no thread, lock or pipe with the fill except stderr. The fill looks for donors
    (:func:`find_donors`) itself, so that the parent does not wait for it.
    """
    import subprocess

    job = {
        **holder(),
        "cache_dir": str(cache_dir),
        "key": key,
        "layout": [list(x) for x in layout],
        "size": size,
        "bit_depth": bit_depth,
        "num_workers": num_workers,
        "pending": [
            [int(s), skey, paths, [_shards.item_digest(i) for i in ids[layout[s][0] : layout[s][1]]]]
            for s, (skey, paths) in pending.items()
        ],
    }
    job_path = cache_dir / f".fill-{key}.json"
    atomic_write_bytes(job_path, json.dumps(job).encode("utf-8"))
    return subprocess.Popen(
        [sys.executable, "-m", "codafeat.data.cache.background_fill", str(job_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _fill_job(job_path: str) -> int:
    """The background fill (``python -m codafeat.data.cache.background_fill JOB``): pending shards, then the index."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    cache_dir, layout = Path(job["cache_dir"]), job["layout"]
    todo = {int(s): (paths, digests) for s, _, paths, digests in job["pending"]}
    jobs = _shards.jobs_for(cache_dir, layout, todo, job["size"], job["bit_depth"], "raise")
    for meta in _shards.fill(jobs, int(job["num_workers"]), 0):
        if "error" in meta:
            name, reason = meta["error"]
            print(f"cannot read image {name!r}: {reason}", file=sys.stderr)
            return 1
    _shards.write_set_index(cache_dir, job["key"], job["size"], layout[-1][1], layout)
    Path(job_path).unlink(missing_ok=True)
    return 0


def kinds_of(paths: Sequence[str], size: int, bit_depth: int | None) -> Counter:
    """The intensity kinds of ``paths`` (read from the files: what a dead fill never recorded)."""
    return Counter(_io.decode_image(p, size=size, bit_depth=bit_depth, with_kind=True)[1] for p in paths)


def fill_failure(returncode: int, stderr: bytes) -> str:
    """Why a fill process failed, in words: its last words, or the signal that ended it.

    Examples
    --------
    >>> fill_failure(-9, b"")
    'the process was killed by SIGKILL (as the out-of-memory killer does)'
    """
    said = stderr.decode(errors="replace").strip()[-2000:]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"the process was killed by {name}" + (" (as the out-of-memory killer does)" if name == "SIGKILL" else "")
        return how + (f"; it said: {said}" if said else "")
    return said or f"the process exited with status {returncode} and said nothing"


if __name__ == "__main__":  # pragma: no cover - run as a background process, tested through DecodedCache
    sys.exit(_fill_job(sys.argv[1]))
