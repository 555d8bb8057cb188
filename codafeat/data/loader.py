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
from torch.utils.data import DataLoader, Dataset, Subset

from .io import ImageReadError, as_unit_float, decode_image, resize_decoded


class Failure(NamedTuple):
    """An image that could not be read: its position, name and the reason."""

    index: int
    path: str
    reason: str


class Batch(NamedTuple):
    """A collated batch: images ``(B, 1, S, S)`` (``uint8`` or ``float32``), their input
    positions ``(B,)``, the failures among them (their rows of ``images`` are zeros), and,
    when asked for, the images' original ``(h, w)`` as a ``(B, 2)`` tensor (``(0, 0)``
    for failures)."""

    images: torch.Tensor
    index: torch.Tensor
    failures: list[Failure]
    shapes: torch.Tensor | None = None
    #: The intensity kind of each image (:data:`codafeat.data.io.INTENSITY_KINDS`; ``""`` for failures).
    kinds: tuple[str, ...] = ()


class ImageDataset(Dataset):
    """Images resized to ``size`` x ``size``; item ``i`` is ``(image, i, failure, (h, w), kind)``.

    ``(h, w)`` is the original size with ``with_shapes=True`` (else ``None``); ``kind`` the
    intensity rule applied (``bit_depth``: see :func:`codafeat.data.io.decode_image`).

    ``image`` is a ``(size, size)`` array (``uint8`` for 8-bit sources, else ``float32``
    in ``[0, 1]``). An unreadable image never raises here: it yields zeros and a
    :class:`Failure`, so that the caller decides (raise with the file name, or skip and
    report). This also keeps :class:`~codafeat.data.io.ImageReadError` intact across
    worker processes.
    """

    def __init__(
        self, items: Sequence[Any], size: int, *, with_shapes: bool = False, bit_depth: int | None = None
    ) -> None:
        self.items = items
        self.size = int(size)
        self.with_shapes = bool(with_shapes)
        self.bit_depth = bit_depth

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        try:
            if not self.with_shapes:
                img, kind = decode_image(
                    self.items[i], size=self.size, index=i, bit_depth=self.bit_depth, with_kind=True
                )
                return img, i, None, None, kind
            full, kind = decode_image(self.items[i], index=i, bit_depth=self.bit_depth, with_kind=True)
            return resize_decoded(full, self.size), i, None, full.shape, kind
        except ImageReadError as exc:
            blank = np.zeros((self.size, self.size), dtype=np.uint8)
            return blank, i, Failure(i, exc.path, exc.reason), (0, 0) if self.with_shapes else None, ""


def collate_images(batch: Sequence[tuple]) -> Batch:
    """Stack :class:`ImageDataset` items into a :class:`Batch`."""
    arrays = [item[0] for item in batch]
    if all(a.dtype == np.uint8 for a in arrays):
        images = torch.from_numpy(np.stack(arrays))
    else:
        images = torch.from_numpy(np.stack([as_unit_float(a) for a in arrays]))
    index = torch.tensor([item[1] for item in batch], dtype=torch.long)
    failures = [item[2] for item in batch if item[2] is not None]
    shapes = torch.tensor([item[3] for item in batch], dtype=torch.long) if batch[0][3] is not None else None
    return Batch(images.unsqueeze(1), index, failures, shapes, tuple(item[4] for item in batch))


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
    start: int = 0,
    stop: int | None = None,
    with_shapes: bool = False,
    bit_depth: int | None = None,
) -> DataLoader:
    """A sequential DataLoader of :class:`Batch` over :class:`ImageDataset` (``items[start:stop]``).

    Workers decode ahead while the caller runs the model; with ``num_workers=0`` decoding
    happens in the calling process between batches. Batch indices are positions in
    ``items``; ``with_shapes`` adds the original image sizes; ``bit_depth`` is the fixed bit
    depth of wide integer images (:func:`codafeat.data.io.decode_image`).

    Examples
    --------
    >>> import numpy as np
    >>> batch = next(iter(make_loader(np.zeros((3, 20, 30), np.uint8), 16, batch_size=2, num_workers=0,
    ...                                with_shapes=True)))
    >>> tuple(batch.images.shape), batch.index.tolist(), batch.shapes.tolist()
    ((2, 1, 16, 16), [0, 1], [[20, 30], [20, 30]])
    """
    dataset: Dataset = ImageDataset(items, size, with_shapes=with_shapes, bit_depth=bit_depth)
    stop = len(items) if stop is None else min(stop, len(items))
    if start or stop < len(items):
        dataset = Subset(dataset, range(start, stop))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
    )


def in_joblib_worker() -> bool:
    """Whether this process is a joblib (loky) worker, e.g. of ``GridSearchCV(n_jobs=2)``."""
    import multiprocessing

    return type(multiprocessing.current_process()).__name__ == "LokyProcess"


def worker_context() -> Any:
    """The multiprocessing context for DataLoader workers and decoding pools.

    ``None`` (torch's and Python's default) except inside a joblib (loky) worker, whose
    default context cannot start ordinary child processes (``AttributeError: 'Process'
    object has no attribute 'env'``): there the platform's standard method is used
    explicitly (``fork`` where it exists, else ``spawn``).
    """
    import multiprocessing

    if not in_joblib_worker():
        return None
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: ``auto_num_workers`` result meaning "decode the first batch here, time it, then decide"
#: (see :func:`workers_after_probe`).
PROBE = -1


def auto_num_workers(n_items: int, batch_size: int, device: torch.device, *, in_memory: bool) -> int:
    """The number of decoding workers ``num_workers="auto"`` uses, or :data:`PROBE`.

    * In-memory images (arrays, PIL) and inputs of at most one batch: ``0``. There is
      little to decode, and starting workers costs more than it saves.
    * Inside a joblib worker (``cross_val_score(..., n_jobs=2)``, ``GridSearchCV``): ``0``;
      joblib already runs one process per core.
    * One CPU core: ``0``; there is nothing to overlap with.
    * CUDA: the GPU outruns decoding, so decode on all cores but one (at most 8).
    * CPU: the model and the decoders share the cores, and whether workers pay depends on
      how expensive decoding is next to the model (a 1024-px PNG costs as much as a small
      backbone's forward pass, a 224-px PNG a thirtieth). :data:`PROBE`: the caller
      decodes and embeds the first batch in-process, timing both, and continues with
      :func:`workers_after_probe` workers.
    """
    if in_memory or n_items <= batch_size or in_joblib_worker():
        return 0
    cpus = available_cpus()
    if cpus < 2:
        return 0
    if device.type == "cuda":
        return min(8, cpus - 1)
    return PROBE


#: Decoding must take at least this share of the model's time before workers are used.
PROBE_MIN_DECODE_SHARE = 0.15


def workers_after_probe(decode_seconds: float, model_seconds: float) -> int:
    """Workers for the rest of the input after a timed in-process first batch.

    ``0`` while decoding costs less than :data:`PROBE_MIN_DECODE_SHARE` of the model's
    time (serial decoding then loses little, and workers would compete with the model
    for the cores). Else enough workers to keep up with the model, ``ceil(decode /
    model)``, but at least 2: the workers share the cores with the model's threads,
    and on 2 cores with 1024-px PNGs two workers kept the model fed better than one
    (benchmarks/RESULTS.md); at most the number of cores, and 8.
    """
    if model_seconds <= 0 or decode_seconds < PROBE_MIN_DECODE_SHARE * model_seconds:
        return 0
    need = max(2, int(np.ceil(decode_seconds / model_seconds)))
    return max(1, min(need, available_cpus(), 8))
