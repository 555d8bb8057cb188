"""torch.distributed helpers: detect ``torchrun``, initialise, gather, reduce.

Everything here is a no-op in a single process, so the training loop has one code path.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and whether it set up the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment says this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device_type: str) -> DistInfo:
    """Join (or, under ``torchrun``, initialise) the default process group.

    Uses NCCL for CUDA and gloo for CPU. A group initialised by the caller is reused and
    left alone at the end.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    if not launched_by_torchrun():
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)
    logger.info("process group initialised: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it.

    Every rank waits for the others first (the last collective is complete everywhere), and
    the objects that still refer to the group (finished work handles, DDP's reducer) are
    collected while the interpreter is fully alive, not during its finalisation, where
    Gloo's threads releasing them can abort the process (pytorch/pytorch#190489). The
    command line also ends its ``torchrun`` processes without finalisation
    (:func:`codafeat.cli.run`).
    """
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def all_gather_cat(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order). No gradient flows."""
    if not info.is_distributed:
        return x
    out = torch.empty((info.world_size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x.contiguous())
    return out


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``x`` over ranks (in place, returned)."""
    if info.is_distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module_(module: torch.nn.Module, info: DistInfo) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank 0's values (in place).

    Used before the EMA teacher is copied from the student, so that every rank starts
    from the same student *and* the same teacher whatever its own initialisation was.
    """
    if not info.is_distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_gather_object(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not info.is_distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(x: torch.Tensor, counts: list[int], info: DistInfo, *, chunk_bytes: int = 64 << 20):
    """Rank 0 gets the rows of every rank concatenated in rank order; the other ranks get ``None``.

    ``counts[r]`` is the number of rows of rank ``r``, known on every rank (``x`` has
    ``counts[rank]`` rows, on the CPU). Rows travel in chunks of about ``chunk_bytes`` per
    rank, padded to the longest share, so neither side holds more than one chunk per rank
    beyond the result. Needs a group whose backend moves CPU tensors (gloo).

    Examples
    --------
    >>> gather_rows(torch.ones(2, 3), [2], DistInfo()).shape
    torch.Size([2, 3])
    """
    if not info.is_distributed:
        return x
    if x.shape[0] != counts[info.rank]:
        raise ValueError(f"rank {info.rank} has {x.shape[0]} rows, but counts says {counts[info.rank]}")
    width = tuple(x.shape[1:])
    row_bytes = max(1, x.element_size() * int(torch.Size(width).numel()))
    chunk = max(1, chunk_bytes // row_bytes)
    offsets = [sum(counts[:r]) for r in range(info.world_size)]
    out = x.new_empty((sum(counts), *width)) if info.is_main else None  # filled in place: no second copy
    for start in range(0, max(counts), chunk):
        n = min(chunk, max(counts) - start)
        piece = torch.zeros((n, *width), dtype=x.dtype)
        mine = x[start : start + n]
        piece[: mine.shape[0]] = mine
        bufs = [torch.empty_like(piece) for _ in range(info.world_size)] if info.is_main else None
        dist.gather(piece, bufs, dst=0)
        if info.is_main:
            for r, buf in enumerate(bufs):
                take = max(0, min(n, counts[r] - start))
                out[offsets[r] + start : offsets[r] + start + take] = buf[:take]
    return out
