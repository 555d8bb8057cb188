"""``torchrun --nproc_per_node=N -m codafeat embed ...``: one embedding job over many processes.

Under ``torchrun`` (one node or many) ``codafeat embed`` runs as follows:

1. Rank 0 checks the output path and lists the images (in the order of the single-process
   command); the list goes to every rank. The inputs must be visible to every node (a
   shared file system), as for pretraining.
2. Rank ``r`` of ``W`` embeds a contiguous share of the images in whole batches of
   ``--batch-size`` (:func:`shares`: shares differ by at most one batch, and each batch
   holds the images it holds in one process, so the rows are the same bytes) with its own
   encoder on its own device (``cuda:LOCAL_RANK``
   on GPUs with ``--device auto``, else the CPU). ``--cache`` is shared: entries are
   content-keyed and written atomically, so ranks never clash.
3. The rows travel to rank 0 over a gloo process group (CPU tensors, in chunks), in rank
   order, so the output's rows follow the input order exactly as in one process. Rank 0
   writes the output atomically (``.npy`` + paths, ``.csv``, ``.parquet``).

Every step that can fail runs on each rank inside an agreement: the ranks exchange their
status before the next collective step, so one rank's error (an unreadable image with
``--on-error raise``, a missing weights file, a full disk) ends every rank with an error
naming the rank and its reason, and no output file is written. A rank that dies outright
(killed, out of memory) is ended by ``torchrun`` with the others; the output is written
only after every row has arrived, atomically, so a partial file never appears.
``--on-error skip`` counts the skipped images over all ranks.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")


def shares(n: int, world_size: int, batch_size: int = 1) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of ``n`` items over ``world_size`` ranks, in whole batches.

    The ``ceil(n / batch_size)`` batches of the single-process run are dealt out
    contiguously, so shares differ by at most one batch, and every rank's batches are the
    single-process batches: the same images in each forward pass, hence the same bytes.

    Examples
    --------
    >>> shares(10, 4)
    [(0, 2), (2, 5), (5, 7), (7, 10)]
    >>> shares(10, 2, batch_size=4)
    [(0, 4), (4, 10)]
    >>> shares(1, 3)
    [(0, 0), (0, 0), (0, 1)]
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    n_batches = -(-n // batch_size)
    bounds = [min(n, n_batches * r // world_size * batch_size) for r in range(world_size + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def on_every_rank(info: Any, step: str, fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; when it fails on any rank, every rank raises (the failing one its own error)."""
    from .._train import dist as D

    try:
        result, error = fn(), None
    except Exception as exc:  # noqa: BLE001 - reported to every rank, then raised
        result, error = None, exc
    statuses = D.all_gather_object(None if error is None else _describe(error), info)
    if error is not None:
        raise error
    failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
    if failed:
        rank, reason = failed[0]
        more = f" (and {len(failed) - 1} other rank(s))" if len(failed) > 1 else ""
        raise RuntimeError(f"{step} failed on rank {rank} of {info.world_size}{more}: {reason}; nothing was written")
    return result  # type: ignore[return-value]


def on_rank_zero(info: Any, step: str, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result on every rank; its error raised on every rank."""
    from .._train import dist as D

    result, reason, error = None, None, None
    if info.is_main:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - reported to every rank, then raised
            error, reason = exc, _describe(exc)
    result, reason = D.broadcast_object((result, reason), info)
    if error is not None:
        raise error
    if reason is not None:
        raise RuntimeError(f"{step} failed on rank 0 of {info.world_size}: {reason}")
    return result  # type: ignore[return-value]


def run_ranks(
    args: argparse.Namespace,
    *,
    list_images: Callable[[], list[str]],
    make_encoder: Callable[..., Any],
    write: Callable[[list[str], np.ndarray], Sequence[Path]],
    report: Callable[[Sequence[Path], tuple[int, int], int, str], None],
) -> int:
    """The embed command as one rank of a ``torchrun`` job (see the module docs).

    The command's own steps come in as functions: ``list_images()`` (checks the output and
    lists the inputs; rank 0 only), ``make_encoder(verbose=...)``, ``write(paths, rows)``
    (rank 0 only) and ``report(written, shape, n_skipped, where)``.
    """
    import torch

    from .._train import dist as D

    info = D.setup("cpu")  # gloo: the rows travel as CPU tensors, whatever device embeds them
    try:
        paths = on_rank_zero(info, "checking the output and listing the images", list_images)
        split = shares(len(paths), info.world_size, args.batch_size)
        lo, hi = split[info.rank]
        logger.info("rank %d of %d: images %d to %d of %d", info.rank, info.world_size, lo, hi, len(paths))

        def embed() -> tuple[np.ndarray, list[str]]:
            enc = make_encoder(verbose=args.verbose if info.is_main else 0)
            if hi == lo:
                return np.zeros((0, enc._n_features_out), np.float32), []
            result = enc.embed(paths[lo:hi])
            return np.ascontiguousarray(result.embeddings, dtype=np.float32), list(result.skipped)

        emb, skipped = on_every_rank(info, "embedding", embed)
        counts = [b - a for a, b in split]
        widths = D.all_gather_object(int(emb.shape[1]), info)
        if len(set(widths)) != 1:
            raise RuntimeError(f"the ranks' encoders give different embedding sizes {widths}; nothing was written")
        rows = D.gather_rows(torch.from_numpy(emb), counts, info)
        n_skipped = sum(len(s) for s in D.all_gather_object(skipped, info))
        written = on_rank_zero(info, "writing the output", lambda: write(paths, rows.numpy()))
        if info.is_main:
            report(written, (len(paths), widths[0]), n_skipped, f" over {info.world_size} processes")
        return 0
    finally:
        D.teardown(info)
