"""torch.distributed helpers: detect ``torchrun``, initialise, gather, reduce.

Everything here is a no-op in a single process, so the training loop has one code path.
"""

from __future__ import annotations

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
    """Destroy the process group if :func:`setup` created it."""
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
