"""Turn one-channel [0, 1] images into normalised backbone input, inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GrayToInput(nn.Module):
    """``(B, 1, H, W)`` in [0, 1] -> ``(B, C, H, W)``: replicate to ``C`` channels, then normalise.

    Doing this on the device (not in the data workers) keeps the decoded batches one
    channel wide, a third of the memory traffic.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_chans: int = 3) -> None:
        super().__init__()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std must have {in_chans} values, got {list(mean)} / {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {list(std)}")
        self.in_chans = in_chans
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        return (x - self.mean) * self.inv_std
