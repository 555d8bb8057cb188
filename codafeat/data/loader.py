"""Streaming image datasets for inference: decode in DataLoader workers, one batch at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .io import ImageReadError, load_image


class ImageDataset(Dataset):
    """Images resized to ``size`` x ``size``, as ``(1, size, size)`` float tensors in [0, 1].

    Items are ``(image, index, ok)``; with ``on_error="skip"`` an unreadable image yields
    zeros and ``ok=False`` so that the caller can count and report it.
    """

    def __init__(self, items: Sequence[Any], size: int, *, on_error: str = "raise") -> None:
        self.items = items
        self.size = int(size)
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        try:
            img = load_image(self.items[i], size=self.size, index=i)
        except ImageReadError:
            if self.on_error == "raise":
                raise
            return torch.zeros(1, self.size, self.size), i, False
        return torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(0), i, True


def make_loader(
    items: Sequence[Any], size: int, *, batch_size: int, num_workers: int, on_error: str = "raise", pin_memory: bool = False
) -> DataLoader:
    """A sequential DataLoader over :class:`ImageDataset` (workers prefetch ahead)."""
    ds = ImageDataset(items, size, on_error=on_error)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
