"""A batch sampler whose *global* batches do not depend on the number of processes.

Each epoch draws one permutation of the dataset from ``(seed, epoch)``, cuts it into
global batches of ``batch_size * world_size`` (the incomplete tail is dropped, as in
DINO), and gives rank ``r`` the ``r``-th slice of every global batch. One process with
batch ``B * W`` and ``W`` processes with batch ``B`` therefore see the same global batches
in the same order, which makes multi-process training comparable to a single process and
resumption exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-rank batches of indices from seeded global batches (see module doc)."""

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        if batch_size * world_size > n:
            raise ValueError(
                f"batch_size={batch_size} x {world_size} process(es) = {batch_size * world_size} "
                f"exceeds the {n} training images; lower batch_size"
            )
        self.n = n
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator()
        g.manual_seed(int(self.seed) * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.batch_size * self.world_size
        for b in range(len(self)):
            start = b * gb + self.rank * self.batch_size
            yield perm[start : start + self.batch_size]
