"""The pretraining dataset: multi-crop views of cached images, reproducible per (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache.decoded import DecodedCache
from .views import MultiCropViews

__all__ = ["MultiCropDataset", "collate_views", "view_seed"]

_MASK64 = (1 << 64) - 1


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit seed for the views of image ``index`` in ``epoch`` of run ``seed``.

    Uses :class:`numpy.random.SeedSequence`, so nearby triples give unrelated streams and
    the result does not depend on the process, worker or rank that computes it.
    """
    state = np.random.SeedSequence([int(seed) & _MASK64, int(epoch) & _MASK64, int(index) & _MASK64])
    return int(state.generate_state(1, dtype=np.uint64)[0])


class MultiCropDataset(Dataset):
    """Multi-crop views of the images of a :class:`DecodedCache`, with their organ labels.

    ``dataset[i]`` is ``(g1, g2, locals, label, i)``: the views of cached image ``i``
    made by ``views`` with a generator seeded from ``(seed, epoch, i)``
    (:func:`view_seed`), so the same seed, epoch and index give the same views in any
    worker, rank or resumed run. Call :meth:`set_epoch` at the start of every epoch
    (as with a ``DistributedSampler``). Batch with :func:`collate_views`.

    Parameters
    ----------
    cache : DecodedCache
        The decoded images.
    labels : array-like of int, shape (len(cache),)
        Organ label of each cached image (align with ``labels[cache.kept]`` when the
        labels were given per input).
    views : MultiCropViews
        The augmentation.
    seed : int, default=0
        Run seed.
    indices : array-like of int, optional
        The cached images this dataset serves (default: all); item ``i`` is cached image
        ``indices[i]``, and the index it reports and seeds its views with is that cache
        index. The training monitor's held-out images are left out this way.
    """

    def __init__(
        self, cache: DecodedCache, labels: Any, views: MultiCropViews, seed: int = 0, indices: Any = None
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(cache):
            raise ValueError(
                f"labels must be a 1-d array with one label per cached image ({len(cache)}), got shape {labels.shape}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers (encode organ names first), got dtype {labels.dtype}")
        self.cache = cache
        self.labels = labels.astype(np.int64)
        self.views = views
        self.seed = int(seed)
        self.epoch = 0
        every = np.arange(len(cache), dtype=np.int64)
        self.indices = every if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1 or (
            self.indices.size and not (0 <= self.indices.min() and self.indices.max() < len(cache))
        ):
            raise ValueError(f"indices must be a 1-d array of cache positions in [0, {len(cache)})")

    def set_epoch(self, epoch: int) -> None:
        """Use the views of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def generator(self, index: int) -> torch.Generator:
        """The generator that makes the views of ``index`` in the current epoch."""
        return torch.Generator().manual_seed(view_seed(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = int(self.indices[index % len(self)])
        img = torch.from_numpy(np.array(self.cache[index], dtype=np.uint8, copy=True))
        g1, g2, local = self.views(img, self.generator(index))
        return g1, g2, local, int(self.labels[index]), index


def collate_views(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]],
) -> dict[str, torch.Tensor]:
    """Stack :class:`MultiCropDataset` items into a batch.

    Returns
    -------
    dict
        ``g1`` and ``g2``: ``(B, 1, S, S)``; ``locals``: ``(n_local * B, 1, s, s)`` ordered
        crop-major (every image's crop 0, then every image's crop 1, ...), so that
        ``locals.view(n_local, B, 1, s, s)[k]`` is crop ``k`` of the batch, aligned with
        ``g1``; ``labels`` and ``index``: ``(B,)`` ``int64``.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    g1 = torch.stack([b[0] for b in batch])
    g2 = torch.stack([b[1] for b in batch])
    local = torch.stack([b[2] for b in batch])  # (B, n_local, 1, s, s)
    local = local.transpose(0, 1).reshape(-1, *local.shape[2:])
    return {
        "g1": g1,
        "g2": g2,
        "locals": local,
        "labels": torch.tensor([int(b[3]) for b in batch], dtype=torch.int64),
        "index": torch.tensor([int(b[4]) for b in batch], dtype=torch.int64),
    }
