"""Leases on decoded-cache shards: what a live run may still use is never cleaned up.

Several runs may share one ``cache_dir`` (two experiments, the ranks of a multi-node job, a
neighbour). A run that has written or opened shards which no set index names yet (a
foreground build before its index is written, a background fill still at work) holds a
*lease*: a small JSON file ``.lease-*.json`` in ``cache_dir`` naming those shards, its
process id and its host. :func:`leased_shards` gives the shards of every live lease, and
the cleanup of unreferenced shards (:func:`codafeat.data.cache.shards.remove_unreferenced`)
keeps them.

A lease is live while its process runs (checked with ``kill(pid, 0)`` on its own host); a
lease written on another host (a shared file system) counts as live for ``REMOTE_GRACE_S``
after it was last written. A lease whose process is gone is stale: this code removes it.
The background fill's job file (``.fill-*.json``) is a lease too: it names every shard of
its run and the training process's id.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..._fileio import atomic_write_bytes

#: How long a lease from another host counts as live after it was last written (seconds).
REMOTE_GRACE_S = 7 * 24 * 3600
LEASE_GLOB = ".lease-*.json"
FILL_GLOB = ".fill-*.json"


def holder() -> dict[str, Any]:
    """This process, as a lease names it."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _alive(record: dict[str, Any], path: Path) -> bool:
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if host != socket.gethostname():
        try:
            return time.time() - path.stat().st_mtime < REMOTE_GRACE_S
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def lease(cache_dir: Path, shards: Iterable[str]) -> Iterator[Path]:
    """Hold a lease on ``shards`` (keys) in ``cache_dir`` for the ``with`` block.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> with lease(d, ["abc"]):
    ...     sorted(leased_shards(d))
    ['abc']
    >>> sorted(leased_shards(d))
    []
    """
    path = cache_dir / f".lease-{secrets.token_hex(8)}.json"
    atomic_write_bytes(path, json.dumps({**holder(), "shards": sorted(set(shards))}).encode("utf-8"))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def leased_shards(cache_dir: Path) -> set[str] | None:
    """The shard keys named by every live lease and fill job in ``cache_dir``; stale leases are removed.

    ``None`` when a lease cannot be read (written atomically, so it is damaged): the caller
    must then remove nothing.
    """
    keys: set[str] = set()
    for path in list(cache_dir.glob(LEASE_GLOB)) + list(cache_dir.glob(FILL_GLOB)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # released meanwhile: its shards are indexed, or no longer used
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        if not _alive(record, path):
            path.unlink(missing_ok=True)  # our own stale file: its process is gone
            continue
        if path.name.startswith(".fill-"):
            keys.update(str(s[2]) for s in record.get("layout", []) if isinstance(s, list) and len(s) > 2)
        else:
            keys.update(str(k) for k in record.get("shards", []))
    return keys
