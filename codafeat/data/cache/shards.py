"""The on-disk decoded cache as fixed-size shards: parallel fill, atomic shards, incremental reuse.

A decoded cache in ``cache_dir`` is a list of shards plus a small set index. The shards are
``shard-<key>.u8``, the ``uint8`` images, and ``shard-<key>.json``, their metadata, written
last. The set index is ``decoded-<key>.json``, the shards of one input list in order.

* **Boundaries follow the content** (rsync's idea). Item ``j`` ends a shard when a hash of
  its identity (path, size, modification time; an array's bytes) is divisible by
  :data:`TARGET_SHARD`, or when the shard reaches :data:`MAX_SHARD` images. Adding or
  removing files therefore changes only the shards they fall into, and a 1 % change
  rebuilds about 1 % of the shards. Every other shard's key is unchanged, and it is reused
  without decoding. A rebuilt shard copies the images it shares with the shards it replaces
  (each shard lists its items' identity digests, see :func:`find_donors`) and decodes only
  the new ones.
* **Each shard is written atomically** (temporary file, fsync, rename, metadata last). A
  crash or a kill loses at most the shards in flight. The next build decodes only the
  missing ones.
* **Shards are filled in parallel**, one shard per pool task, when ``num_workers > 0``.
  Memory stays flat in the number of images: a shard is streamed to disk image by image.

Shards that no set index in the folder refers to any more are removed after a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..._fileio import TEMP_PATTERN, atomic_open, atomic_write_bytes
from .. import io as _io
from . import leases as _leases

logger = logging.getLogger(__name__)

#: Expected images per shard (boundaries are content-defined; see the module doc).
TARGET_SHARD = 256
#: Images per shard at most.
MAX_SHARD = 1024
SHARD_FORMAT = "codafeat-decoded-shard"
SHARD_VERSION = 1
#: The set index (``decoded-<key>.json``): its format name and version.
SET_FORMAT = "codafeat-decoded-cache"
SET_VERSION = 2  # 2: sharded; 1 (codafeat 0.1): one file per input list


def set_index_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """The set index ``decoded-<key>.json`` of one input list."""
    return Path(cache_dir) / f"decoded-{key}.json"


def write_set_index(cache_dir: Path, key: str, size: int, n_items: int, layout: Sequence[Sequence[Any]]) -> Path:
    """Write ``decoded-<key>.json``, the shards of one input list in order (atomically, after the shards)."""
    index = {
        "format": SET_FORMAT,
        "version": SET_VERSION,
        "key": key,
        "cache_size": int(size),
        "n_items": int(n_items),
        "shards": [list(x) for x in layout],
    }
    path = set_index_path(cache_dir, key)
    atomic_write_bytes(path, json.dumps(index).encode("utf-8"))
    return path


def read_meta(path: Path, fmt: str, key: str, what: str) -> dict[str, Any]:
    """The JSON object of ``path``, checked to be a ``fmt`` file for ``key``.

    Raises
    ------
    FileNotFoundError
        No such file (a shard or an index is written last, so it is incomplete).
    ValueError
        Unreadable JSON, or another format or key; the message names ``what`` and the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no {what} {str(path)!r}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} {str(path)!r} is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or meta.get("key") != key:
        raise ValueError(f"{str(path)!r} is not a codafeat {what} for key {key}")
    return meta


def layout(ids: Sequence[bytes], cache_size: int, bit_depth: int | None) -> list[tuple[int, int, str]]:
    """``(start, stop, shard key)`` of every shard of the inputs with identities ``ids``."""
    return [(lo, hi, shard_key(ids[lo:hi], cache_size, bit_depth)) for lo, hi in bounds(ids)]


def identity(item: Any, index: int) -> bytes:
    """What identifies an input: a path with its size and modification time, or an array's content.

    Examples
    --------
    >>> import numpy as np
    >>> identity(np.zeros((2, 2), np.uint8), 0) == identity(np.zeros((2, 2), np.uint8), 5)
    True
    """
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isabs(path):
            path = os.path.abspath(path)
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        return f"path\0{path}\0{stamp}\n".encode("utf-8", "surrogatepass")
    if isinstance(item, np.ndarray):  # a digest, so that the identities of a large array set stay small
        digest = hashlib.sha256(np.ascontiguousarray(item).tobytes()).digest()
        return f"array\0{item.dtype.str}\0{item.shape}\n".encode() + digest
    if isinstance(item, Image.Image):
        return f"pil\0{item.mode}\0{item.size}\n".encode() + hashlib.sha256(item.tobytes()).digest()
    return f"other\0{index}\0{type(item).__name__}\n".encode()  # decoding will reject it


def identity_list(items: Sequence[Any]) -> list[bytes]:
    """:func:`identity` of every input (one ``stat`` per file; arrays are hashed by content)."""
    return [identity(items[i], i) for i in range(len(items))]


def bounds(ids: Sequence[bytes], *, target: int | None = None, limit: int | None = None) -> list[tuple[int, int]]:
    """Content-defined ``(start, stop)`` shard bounds over the identities ``ids``.

    ``target`` / ``limit`` default to :data:`TARGET_SHARD` / :data:`MAX_SHARD`.

    Examples
    --------
    >>> ids = [str(i).encode() for i in range(2000)]
    >>> b = bounds(ids)
    >>> b[0][0], b[-1][1], all(hi - lo <= MAX_SHARD for lo, hi in b)
    (0, 2000, True)
    >>> moved = bounds([b"new"] + ids)  # one inserted item shifts only the first shard
    >>> [(lo + 1, hi + 1) for lo, hi in b[1:]] == moved[1:]
    True
    """
    target = TARGET_SHARD if target is None else int(target)
    limit = MAX_SHARD if limit is None else int(limit)
    out: list[tuple[int, int]] = []
    lo = 0
    for j, ident in enumerate(ids):
        h = int.from_bytes(hashlib.blake2b(ident, digest_size=8).digest(), "little")
        if h % target == 0 or j + 1 - lo >= limit:
            out.append((lo, j + 1))
            lo = j + 1
    if lo < len(ids):
        out.append((lo, len(ids)))
    return out


def shard_key(ids: Sequence[bytes], cache_size: int, bit_depth: int | None) -> str:
    """The key of a shard: its inputs' identities at this size and intensity rule."""
    h = hashlib.sha256(f"{SHARD_FORMAT}\0{SHARD_VERSION}\0{int(cache_size)}\0{bit_depth}\0{len(ids)}\n".encode())
    for ident in ids:
        h.update(hashlib.sha256(ident).digest())
    return h.hexdigest()


def paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """``(data, metadata)`` files of shard ``key``."""
    return cache_dir / f"shard-{key}.u8", cache_dir / f"shard-{key}.json"


def open_shard(cache_dir: Path, key: str, *, verify: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """``(memmap (n, s, s), metadata)`` of a complete shard.

    ``verify`` checks the data's CRC-32 (one read of the shard); ``False`` only where the
    caller needs the metadata of a shard it has just written.

    Raises
    ------
    FileNotFoundError
        No complete shard (its metadata is written last).
    ValueError
        The metadata or the data file is inconsistent.
    """
    data, meta_path = paths(cache_dir, key)
    meta = read_meta(meta_path, SHARD_FORMAT, key, "decoded-cache shard")
    _check_shard_meta(meta, meta_path)
    n, size = len(meta["kept"]), int(meta["cache_size"])
    try:
        actual = data.stat().st_size
    except OSError as exc:
        raise ValueError(f"decoded-cache shard data {str(data)!r} is missing ({exc})") from exc
    if actual != n * size * size:
        raise ValueError(f"decoded-cache shard data {str(data)!r} has {actual} bytes, expected {n * size * size}")
    if verify and "crc32" in meta and _crc32(data) != meta["crc32"]:  # shards written before checksums have none
        raise ValueError(f"decoded-cache shard data {str(data)!r} does not match its checksum (damaged bytes)")
    array = (
        np.memmap(data, dtype=np.uint8, mode="r", shape=(n, size, size)) if n else np.empty((0, size, size), np.uint8)
    )
    return array, meta


def _check_shard_meta(meta: dict[str, Any], path: Path) -> None:
    """The fields a reader unpacks, checked: a damaged shard is rebuilt, not used (and not kept forever)."""

    def ints(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)

    problems = []
    if not ints(meta.get("kept")):
        problems.append("'kept' is not a list of ints")
    skipped = meta.get("skipped")
    if not (isinstance(skipped, list) and all(isinstance(x, list) and len(x) == 3 for x in skipped)):
        problems.append("'skipped' is not a list of [index, name, reason]")
    kinds = meta.get("kinds")
    if not (isinstance(kinds, dict) and all(isinstance(v, int) for v in kinds.values())):
        problems.append("'kinds' is not a JSON object of counts")
    size = meta.get("cache_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        problems.append(f"'cache_size' is {size!r}")
    if problems:
        raise ValueError(f"decoded-cache shard metadata {str(path)!r} is damaged: " + "; ".join(problems))


def _crc32(path: Path, chunk: int = 1 << 24) -> int:
    """CRC-32 of a file, read in chunks (about 1 GB/s: a second run of 100k 73-px images reads 0.5 GB)."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def item_digest(ident: bytes) -> str:
    """A short digest of an input's :func:`identity`, stored per image in its shard's metadata."""
    return hashlib.blake2b(ident, digest_size=8).hexdigest()


#: Where an already decoded image is: ``(shard data file, row, intensity kind)``.
Donor = tuple[str, int, str]


class ShardJob(NamedTuple):
    """What :func:`write_shard` needs to write one shard (picklable, for worker processes)."""

    cache_dir: Path
    key: str
    start: int
    items: Sequence[Any]
    size: int
    bit_depth: int | None
    on_error: str
    digests: Sequence[str]
    donors: dict[int, Donor]  # position in the shard -> the same image, decoded in another shard


def find_donors(
    cache_dir: Path, keep: set[str], wanted: set[str], size: int, bit_depth: int | None
) -> dict[str, Donor]:
    """``digest -> donor`` for the ``wanted`` item digests, from shards on disk whose key is not in ``keep``.

    A shard that a new layout no longer uses (``keep``: the new layout's keys) may hold
    images of the shards that replace it: the same input (same identity: path, size,
    modification time) at the same size and intensity rule has the same decoded bytes.
    Only shard metadata is read; shards written before digests were stored, or for another
    size or bit depth, give nothing. Memory is bounded by ``wanted``.
    """
    found: dict[str, Donor] = {}
    if not wanted:
        return found
    for meta_path in cache_dir.glob("shard-*.json"):
        skey = meta_path.stem[len("shard-") :]
        if skey in keep:
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("cache_size") != size or meta.get("bit_depth", "?") != bit_depth or "ids" not in meta:
                continue
            data = str(paths(cache_dir, skey)[0])
            for row, (digest, kind) in enumerate(zip(meta["ids"], meta["item_kinds"])):
                if digest in wanted and digest not in found:
                    found[digest] = (data, row, kind)
        except (OSError, ValueError, TypeError, KeyError):
            continue  # an unreadable donor: its images are decoded instead
    return found


def jobs_for(
    cache_dir: Path,
    layout: Sequence[Sequence[Any]],
    todo: dict[int, tuple[Sequence[Any], Sequence[str]]],
    size: int,
    bit_depth: int | None,
    on_error: str,
) -> list[ShardJob]:
    """One :class:`ShardJob` per shard of ``layout`` in ``todo``, with the donors of its images.

    ``todo`` maps a shard's index to its inputs and their :func:`item_digest` values.
    """
    wanted = {d for _, digests in todo.values() for d in digests}
    donors = find_donors(cache_dir, {x[2] for x in layout}, wanted, size, bit_depth)
    jobs = []
    for s, (items, digests) in sorted(todo.items()):
        mine = {j: donors[d] for j, d in enumerate(digests) if d in donors}
        jobs.append(
            ShardJob(cache_dir, layout[s][2], layout[s][0], items, size, bit_depth, on_error, list(digests), mine)
        )
    return jobs


def _copy_from(donor: Donor, size: int, opened: dict[str, np.ndarray]) -> bytes | None:
    """The donor image's bytes, or ``None`` when its shard is gone or inconsistent (then decode)."""
    path, row, _ = donor
    try:
        if path not in opened:
            n, rest = divmod(os.path.getsize(path), size * size)
            if rest:
                return None
            opened[path] = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, size, size))
        array = opened[path]
        return array[row].tobytes() if 0 <= row < len(array) else None
    except (OSError, ValueError):
        return None


def to_u8(img: np.ndarray) -> np.ndarray:
    """A decoded image as the shards store it: ``uint8``, ``round(255 * x)``."""
    out = np.rint(np.asarray(_io.as_unit_float(img), dtype=np.float32) * np.float32(255.0))
    return np.clip(out, 0, 255).astype(np.uint8)


class _Abort(Exception):
    """An unreadable input under ``on_error="raise"``: abandon the shard."""


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Decode one shard's inputs (or copy them from donors) and write it atomically; returns its metadata.

    Runs in workers too. With ``on_error="raise"`` an unreadable input stops the shard
    before anything is written; its ``(name, reason)`` is returned under ``"error"``.
    """
    data, meta_path = paths(job.cache_dir, job.key)
    kept: list[int] = []
    skipped: list[tuple[int, str, str]] = []
    kinds: list[str] = []
    opened: dict[str, np.ndarray] = {}
    copied = 0
    crc = 0
    try:
        with atomic_open(data) as fh:
            for j, item in enumerate(job.items):
                donor = job.donors.get(j)
                raw = _copy_from(donor, job.size, opened) if donor is not None else None
                if raw is not None:
                    kind = donor[2]
                    copied += 1
                else:
                    try:
                        img, kind = _io.decode_image(
                            item, size=job.size, index=job.start + j, bit_depth=job.bit_depth, with_kind=True
                        )
                    except _io.ImageReadError as exc:
                        if job.on_error == "raise":
                            raise _Abort(exc.path, exc.reason) from exc  # nothing of this shard is written
                        skipped.append((job.start + j, exc.path, exc.reason))
                        continue
                    raw = to_u8(img).tobytes()
                fh.write(raw)
                crc = zlib.crc32(raw, crc)
                kept.append(job.start + j)
                kinds.append(kind)
    except _Abort as stop:
        return {"error": stop.args}
    finally:
        opened.clear()
    first = job.start
    meta = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "key": job.key,
        "cache_size": job.size,
        "bit_depth": job.bit_depth,
        "start": first,
        "n_items": len(job.items),
        "kept": kept,
        "skipped": skipped,
        "kinds": dict(Counter(kinds)),
        "ids": [job.digests[i - first] for i in kept],
        "item_kinds": kinds,
        "copied": copied,
        "crc32": crc,
    }
    atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))
    return meta


def fill(jobs: list[ShardJob], num_workers: int, verbose: int) -> Iterator[dict[str, Any]]:
    """Run :func:`write_shard` on every job, in a pool of ``num_workers`` processes when > 0."""
    from tqdm.auto import tqdm

    total = sum(len(j.items) for j in jobs)
    with contextlib.ExitStack() as stack:
        if num_workers > 0 and len(jobs) > 1:
            from ..loader import worker_context  # (torch, for the loader; not needed by the fill process)

            ctx = worker_context() or multiprocessing.get_context()
            pool = stack.enter_context(ctx.Pool(min(num_workers, len(jobs))))
            results: Iterator = pool.imap_unordered(write_shard, jobs)
        else:
            results = map(write_shard, jobs)
        bar = stack.enter_context(tqdm(total=total, desc="decoding images", unit="img", disable=verbose < 1))
        for meta in results:
            bar.update(meta.get("n_items", 0) if "error" not in meta else 0)
            yield meta


def remove_unreferenced(cache_dir: Path) -> list[Path]:
    """Delete shard files that no set index (``decoded-*.json``) and no live lease in ``cache_dir`` refers to.

    A shard a live run may still use (written or opened but not yet indexed, see
    :mod:`codafeat.data.cache.leases`) is kept, so runs can share a ``cache_dir``. The temporary
    files of shard writes that were killed before their rename (``.shard-*.tmp``) are removed
    too, unless a live run holds a lease on that shard (it may be writing it now).
    """
    leased = _leases.leased_shards(cache_dir)
    if leased is None:
        return []  # a lease we cannot read: remove nothing
    used = set(leased)
    for index in cache_dir.glob("decoded-*.json"):
        try:
            used.update(s[2] for s in json.loads(index.read_text(encoding="utf-8")).get("shards", []))
        except (OSError, ValueError, TypeError, IndexError):
            return []  # an index we cannot read: remove nothing
    removed = []
    for p in list(cache_dir.glob("shard-*.u8")) + list(cache_dir.glob("shard-*.json")):
        key = p.stem[len("shard-") :]
        if key not in used:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    for p in cache_dir.glob(".shard-*.tmp"):
        m = TEMP_PATTERN.match(p.name)
        if m and m.group("target").split(".")[0][len("shard-") :] not in leased:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def complete_shards(cache_dir: Path, layout: Sequence[Sequence[Any]]) -> dict[int, tuple[int, dict[str, int]]]:
    """``shard index -> (images, intensity kinds)`` of the shards of ``layout`` complete on disk.

    A missing or inconsistent shard is left out: it is (re)written.
    """
    present = {}
    for s, (_, _, skey) in enumerate(layout):
        try:
            array, meta = open_shard(cache_dir, skey)
        except (FileNotFoundError, ValueError):
            continue
        present[s] = (len(array), meta["kinds"])
    return present
