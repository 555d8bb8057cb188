"""Streaming image batches for inference: decode in DataLoader workers, one batch at a time.

Memory is bounded by the batches in flight (``batch_size * (1 + num_workers *
prefetch_factor)`` decoded images), never by the dataset: the dataset holds only the
list of items (paths, or references to in-memory images).

Decoded 8-bit images travel as ``uint8`` (the model scales them, see
:class:`~codafeat.nn.preprocess.GrayToInput`); a batch is ``float32`` in ``[0, 1]`` only
when one of its images is not 8-bit (16-bit PNG, DICOM, float arrays).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .io import ImageReadError, as_unit_float, decode_image


class Failure(NamedTuple):
    """An image that could not be read: its position, name and the reason."""

    index: int
    path: str
    reason: str


class Batch(NamedTuple):
    """A collated batch: images ``(B, 1, S, S)`` (``uint8`` or ``float32``), their input
    positions ``(B,)``, and the failures among them (their rows of ``images`` are zeros)."""

    images: torch.Tensor
    index: torch.Tensor
    failures: list[Failure]


class ImageDataset(Dataset):
    """Images resized to ``size`` x ``size``; item ``i`` is ``(image, i, failure)``.

    ``image`` is a ``(size, size)`` array (``uint8`` for 8-bit sources, else ``float32``
    in ``[0, 1]``). An unreadable image never raises here: it yields zeros and a
    :class:`Failure`, so that the caller decides (raise with the file name, or skip and
    report). This also keeps :class:`~codafeat.data.io.ImageReadError` intact across
    worker processes.
    """

    def __init__(self, items: Sequence[Any], size: int) -> None:
        self.items = items
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, Failure | None]:
        try:
            return decode_image(self.items[i], size=self.size, index=i), i, None
        except ImageReadError as exc:
            return np.zeros((self.size, self.size), dtype=np.uint8), i, Failure(i, exc.path, exc.reason)


def collate_images(batch: Sequence[tuple[np.ndarray, int, Failure | None]]) -> Batch:
    """Stack ``(image, index, failure)`` items into a :class:`Batch`."""
    arrays = [item[0] for item in batch]
    if all(a.dtype == np.uint8 for a in arrays):
        images = torch.from_numpy(np.stack(arrays))
    else:
        images = torch.from_numpy(
            np.stack([as_unit_float(a) for a in arrays])
        )
    index = torch.tensor([item[1] for item in batch], dtype=torch.long)
    failures = [item[2] for item in batch if item[2] is not None]
    return Batch(images.unsqueeze(1), index, failures)


def raise_failure(failure: Failure) -> None:
    """Raise the :class:`~codafeat.data.io.ImageReadError` that ``failure`` records."""
    raise ImageReadError(failure.path, failure.reason)


def is_in_memory(items: Sequence[Any]) -> bool:
    """Whether ``items`` are in-memory images (arrays, PIL images), not file paths."""
    if isinstance(items, np.ndarray):
        return items.dtype.kind not in "OUS"
    return len(items) > 0 and not isinstance(items[0], (str, os.PathLike))


def make_loader(
    items: Sequence[Any],
    size: int,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A sequential DataLoader of :class:`Batch` over :class:`ImageDataset`.

    Workers decode ahead while the caller runs the model; with ``num_workers=0`` decoding
    happens in the calling process between batches.
    """
    return DataLoader(
        ImageDataset(items, size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_num_workers(n_items: int, batch_size: int, device: torch.device, *, in_memory: bool) -> int:
    """The number of decoding workers ``num_workers="auto"`` uses.

    * In-memory images (arrays, PIL) and inputs of at most one batch: ``0``. There is
      little to decode, and starting workers costs more than it saves.
    * CUDA: the GPU outruns decoding, so decode on all cores but one (at most 8).
    * CPU: the model and the decoders share the cores. TODO
    """
    if in_memory or n_items <= batch_size:
        return 0
    cpus = available_cpus()
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return 1
