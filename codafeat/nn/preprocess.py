"""Turn one-channel [0, 1] images into normalised backbone input, inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GrayToInput(nn.Module):
    """``(B, 1, H, W)`` image -> ``(B, C, H, W)`` input: replicate to ``C`` channels, normalise.

    Accepts ``float`` input in ``[0, 1]`` or ``uint8`` input (``0..255``, scaled by 1/255
    here). Doing this on the model's device, not in the data workers, keeps the decoded
    batches one channel and one byte wide: a twelfth of the memory traffic of
    normalised float RGB. Scaling, replication and normalisation are one fused
    multiply-add, ``x * (s / std) - mean / std``.

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel normalisation, ``in_chans`` values each.
    in_chans : int, default=3
        Channels of the backbone input.
    channels_last : bool, default=False
        Write the output in ``torch.channels_last`` memory format (what a channels-last
        backbone wants), without an extra copy.
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], in_chans: int = 3, *, channels_last: bool = False
    ) -> None:
        super().__init__()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std must have {in_chans} values, got {list(mean)} / {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {list(std)}")
        self.in_chans = in_chans
        self.channels_last = channels_last
        mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        inv_std = 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("inv_std", inv_std, persistent=False)
        self.register_buffer("shift", -mean_t * inv_std, persistent=False)
        self.register_buffer("inv_std_u8", inv_std / 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, self.in_chans):
            raise ValueError(f"expected input (B, 1, H, W) or (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            scale = self.inv_std_u8
            x = x.to(self.shift.dtype)
        else:
            scale = self.inv_std
        if not self.channels_last:
            return torch.addcmul(self.shift, x, scale)
        b, _, h, w = x.shape
        out = torch.empty(
            (b, self.in_chans, h, w),
            dtype=torch.result_type(x, scale),
            device=x.device,
            memory_format=torch.channels_last,
        )
        return torch.addcmul(self.shift, x, scale, out=out)
