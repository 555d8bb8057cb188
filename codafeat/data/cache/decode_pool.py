"""Decoding many images once, in input order, in a pool of processes: the decoded cache's first step.

:func:`decoded` yields ``(index, uint8 image, intensity kind)`` (or ``(index, None, (name,
reason))`` for an unreadable input) in input order, decoding in worker processes when
``num_workers > 0``; :func:`decode_to_array` collects them into one in-memory array.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import io as _io
from .. import loader as _loader
from . import shards as _shards

__all__ = ["decode_to_array", "decoded"]


def decode_one(job: tuple[int, Any, int, int | None]) -> tuple[int, np.ndarray | None, Any]:
    """Decode one input to ``(i, uint8 image, kind)``; an unreadable one gives ``(i, None, (name, reason))``.

    Runs in workers too.
    """
    i, item, size, bit_depth = job
    try:
        img, kind = _io.decode_image(item, size=size, index=i, bit_depth=bit_depth, with_kind=True)
    except _io.ImageReadError as exc:
        return i, None, (exc.path, exc.reason)
    return i, _shards.to_u8(img), kind


def decoded(
    items: Sequence[Any], size: int, on_error: str, num_workers: int, verbose: int, bit_depth: int | None = None
) -> Iterator[tuple[int, np.ndarray | None, Any]]:
    """``(i, image, kind)`` (or ``(i, None, (name, reason))``) in input order; with
    ``on_error="raise"`` the first failure raises."""
    from tqdm.auto import tqdm

    jobs = ((i, items[i], size, bit_depth) for i in range(len(items)))
    with contextlib.ExitStack() as stack:
        if num_workers > 0 and len(items) > 1:
            pool = stack.enter_context(
                (_loader.worker_context() or multiprocessing.get_context()).Pool(min(num_workers, len(items)))
            )
            chunk = max(1, min(64, len(items) // (4 * num_workers)))
            results: Iterator = pool.imap(decode_one, jobs, chunksize=chunk)
        else:
            results = map(decode_one, jobs)
        bar = stack.enter_context(tqdm(total=len(items), desc="decoding images", unit="img", disable=verbose < 1))
        for res in results:
            bar.update(1)
            if res[1] is None and on_error == "raise":
                raise _io.ImageReadError(*res[2])
            yield res


def decode_to_array(
    items: Sequence[Any],
    size: int,
    on_error: str,
    num_workers: int,
    verbose: int,
    bit_depth: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], dict[str, int]]:
    """``(array, kept, skipped, reasons, kinds)``: the readable images at ``size``, their input indices,
    the unreadable inputs' names and reasons, and the count of each intensity kind."""
    array = np.empty((len(items), size, size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[str] = []
    reasons: list[str] = []
    kinds: Counter = Counter()
    for i, img, note in decoded(items, size, on_error, num_workers, verbose, bit_depth):
        if img is None:
            skipped.append(note[0])
            reasons.append(note[1])
            continue
        array[len(kept)] = img
        kept.append(i)
        kinds[note] += 1
    if not kept:
        raise ValueError(f"none of the {len(items)} images could be read")
    if len(kept) < len(items):
        array = array[: len(kept)].copy()
    return array, np.asarray(kept, dtype=np.int64), skipped, reasons, dict(kinds)
