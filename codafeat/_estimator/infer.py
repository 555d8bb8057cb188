"""Streaming inference shared by the estimators: decode in DataLoader workers, apply a model.

:func:`stream_batches` is the one inference loop of :class:`~codafeat.CodaEncoder`,
:class:`~codafeat.CodaSegmenter` and the fine-tuned classifier and regressor (through
:func:`forward_batches`, which applies a model under the device policy's autocast). The
images are decoded batch by batch (in worker processes when that pays, see
:func:`~codafeat.data.loader.auto_num_workers`), each batch is placed by the
:class:`~codafeat._device.DevicePolicy` and handed to the caller's ``apply``. Memory is
bounded by the batches in flight, never by the input.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._device import DevicePolicy
from ..data.io import report_skipped
from ..data.loader import (
    PROBE,
    Batch,
    Failure,
    auto_num_workers,
    is_in_memory,
    make_loader,
    raise_failure,
    workers_after_probe,
)

logger = logging.getLogger(__name__)


class SkippedImagesWarning(UserWarning):
    """Images that could not be read were skipped; ``skipped`` lists their names.

    The estimators' ``transform`` / ``predict`` do not record per-call state (they only read
    the fitted estimator, so threads may share one). The names travel with the warning:

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn(SkippedImagesWarning("2 unreadable", ["a.png", "b.png"]))
    >>> caught[0].message.skipped
    ['a.png', 'b.png']
    """

    def __init__(self, message: str, skipped: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.skipped = list(skipped)

    def __reduce__(self):
        return (type(self), (str(self), self.skipped))


#: ``apply(x, batch)``: ``x`` is ``batch.images`` on the device; rows of ``batch.failures``
#: are zeros and must be ignored by the caller.
Apply = Callable[[torch.Tensor, Batch], None]


def resolve_workers(num_workers: int | str, items: Sequence[Any], batch_size: int, device: torch.device) -> int:
    """``num_workers``, with ``"auto"`` resolved for these items and this device (may be PROBE)."""
    if num_workers != "auto":
        return int(num_workers)
    return auto_num_workers(len(items), batch_size, device, in_memory=is_in_memory(items))


def stream_batches(
    items: Sequence[Any],
    size: int,
    apply: Apply,
    *,
    policy: DevicePolicy,
    batch_size: int,
    num_workers: int | str,
    on_error: str,
    with_shapes: bool = False,
    bit_depth: int | None = None,
    progress: Any = None,
) -> list[Failure]:
    """Decode ``items`` at ``size`` x ``size`` and call ``apply`` on every batch, in order.

    Parameters
    ----------
    items : sequence
        Paths or in-memory images (see :func:`codafeat.data.io.as_image_list`).
    size : int
        Side the images are resized to.
    apply : callable
        ``apply(x, batch)``, run under ``torch.inference_mode``; ``x`` is the batch's
        images placed by ``policy``.
    policy : DevicePolicy
        Device, memory format and pinning.
    batch_size : int
        Images per batch.
    num_workers : int or "auto"
        Decoding worker processes; ``"auto"`` on the CPU times the first batch in this
        process and then decides (:func:`~codafeat.data.loader.workers_after_probe`).
    on_error : {"raise", "skip"}
        An unreadable image raises its :class:`~codafeat.data.io.ImageReadError`, or is
        returned among the failures.
    with_shapes : bool, default=False
        Give each batch the images' original ``(h, w)`` in ``batch.shapes``.
    bit_depth : int or None, default=None
        Fixed bit depth of integer images of more than 8 bits (see
        :func:`codafeat.data.io.decode_image`); ``batch.kinds`` names the rule of each image.
    progress : tqdm or None
        Updated by the number of images of each batch.

    Returns
    -------
    list of Failure
        The unreadable images (empty with ``on_error="raise"``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from codafeat._device import DevicePolicy
    >>> sums = {}
    >>> def apply(x, batch):
    ...     sums.update(zip(batch.index.tolist(), x.float().sum((1, 2, 3)).tolist()))
    >>> stream_batches(np.ones((3, 8, 8), np.uint8), 4, apply, policy=DevicePolicy(torch.device("cpu")),
    ...                batch_size=2, num_workers=0, on_error="raise")
    []
    >>> sums
    {0: 16.0, 1: 16.0, 2: 16.0}
    """
    n = len(items)
    failures: list[Failure] = []
    if n == 0:
        return failures
    workers = resolve_workers(num_workers, items, batch_size, policy.device)
    run = dict(
        policy=policy,
        batch_size=batch_size,
        on_error=on_error,
        with_shapes=with_shapes,
        bit_depth=bit_depth,
        progress=progress,
    )
    start = 0
    if workers == PROBE:
        # decode and run the first batch here, timing both, then choose the workers
        start = min(batch_size, n)
        decode_s, model_s = _run(items, size, apply, failures, workers=0, stop=start, **run)
        workers = workers_after_probe(decode_s, model_s)
        logger.debug("probe: decoding %.3fs, model %.3fs per batch -> %d worker(s)", decode_s, model_s, workers)
    if start < n:
        _run(items, size, apply, failures, workers=workers, start=start, **run)
    return failures


def forward_batches(
    model: Callable[[torch.Tensor], torch.Tensor],
    items: Sequence[Any],
    size: int,
    collect: Callable[[torch.Tensor, Batch], None],
    *,
    policy: DevicePolicy,
    **stream: Any,
) -> list[Failure]:
    """:func:`stream_batches` with ``model`` applied: ``collect(outputs, batch)`` gets each batch's outputs.

    The forward pass runs under the policy's autocast and the outputs reach ``collect`` as
    float32; ``stream`` are :func:`stream_batches`' keywords (``batch_size``, ``num_workers``,
    ``on_error``, ``with_shapes``, ``bit_depth``, ``progress``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from codafeat._device import DevicePolicy
    >>> rows = {}
    >>> def model(x):  # uint8 images in, float64 means out
    ...     return x.double().mean((1, 2, 3))
    >>> forward_batches(model, np.ones((3, 8, 8), np.uint8), 4, lambda y, b: rows.update(zip(b.index.tolist(), y)),
    ...                 policy=DevicePolicy(torch.device("cpu")), batch_size=2, num_workers=0, on_error="raise")
    []
    >>> sorted(rows), rows[0].dtype, float(rows[0])
    ([0, 1, 2], torch.float32, 1.0)
    """

    def apply(x: torch.Tensor, batch: Batch) -> None:
        with policy.autocast():
            out = model(x)
        collect(out.float(), batch)

    return stream_batches(items, size, apply, policy=policy, **stream)


def _run(
    items: Sequence[Any],
    size: int,
    apply: Apply,
    failures: list[Failure],
    *,
    policy: DevicePolicy,
    batch_size: int,
    on_error: str,
    with_shapes: bool,
    bit_depth: int | None,
    progress: Any,
    workers: int,
    start: int = 0,
    stop: int | None = None,
) -> tuple[float, float]:
    """Run ``items[start:stop]``; returns the seconds spent waiting for batches and in ``apply``."""
    loader = make_loader(
        items,
        size,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=policy.pin_memory,
        start=start,
        stop=stop,
        with_shapes=with_shapes,
        bit_depth=bit_depth,
    )
    logger.debug("images %d:%s with %d worker(s) on %s", start, stop, workers, policy.device)
    wait_s = model_s = 0.0
    error: Failure | None = None
    with torch.inference_mode():
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            wait_s += t1 - t0
            if batch is None:
                break
            if batch.failures:
                if on_error == "raise":
                    error = batch.failures[0]
                    break
                failures.extend(batch.failures)
            apply(policy.batch(batch.images), batch)
            model_s += time.perf_counter() - t1
            if progress is not None:
                progress.update(len(batch.index))
        del it  # shuts the workers down before an error propagates
    if error is not None:
        raise_failure(error)
    return wait_s, model_s


def warn_skipped(failures: Sequence[Failure], *, context: str, consequence: str, stacklevel: int = 4) -> list[str]:
    """Log and warn about unreadable images (nothing is dropped silently); returns their names."""
    names = [f.path for f in failures]
    if not names:
        return names
    report_skipped(names, context=context)
    warnings.warn(
        SkippedImagesWarning(
            f"{context} skipped {len(names)} unreadable image(s) ({consequence}): "
            + "; ".join(f"{f.path}: {f.reason}" for f in failures[:5])
            + (" ..." if len(names) > 5 else ""),
            names,
        ),
        stacklevel=stacklevel,
    )
    return names


def progress_bar(verbose: int, total: int, desc: str) -> Any:
    """A tqdm bar when ``verbose``, else ``None``."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img")


def decode_to_tensor(
    items: Sequence[Any],
    size: int,
    *,
    on_error: str,
    num_workers: int | str,
    batch_size: int,
    bit_depth: int | None = None,
    dtype: torch.dtype = torch.float16,
) -> tuple[torch.Tensor, list[Failure], Any]:
    """Decode every image at ``size`` x ``size`` into one CPU tensor ``(n, 1, size, size)``.

    The training images of a fine-tuning estimator, decoded once (in DataLoader workers when
    that pays) and kept in ``dtype``: float16 holds every 8-bit level exactly apart at half the
    memory of float32 (``n * size**2 * 2`` bytes). Rows of unreadable images (``on_error="skip"``)
    are zeros; they are listed in the returned failures, and the third value counts the
    intensity rules the images went through (see :func:`codafeat.data.io.decode_image`).

    Examples
    --------
    >>> import numpy as np
    >>> x, failures, kinds = decode_to_tensor(np.full((3, 8, 8), 255, np.uint8), 4, on_error="raise",
    ...                                       num_workers=0, batch_size=2)
    >>> tuple(x.shape), x.dtype, float(x.min()), failures, dict(kinds)
    ((3, 1, 4, 4), torch.float16, 1.0, [], {'8bit': 3})
    """
    from collections import Counter

    out = torch.zeros(len(items), 1, size, size, dtype=dtype)
    kinds: Counter = Counter()

    def apply(x: torch.Tensor, batch: Batch) -> None:
        kinds.update(k for k in batch.kinds if k)
        out[batch.index] = (x.float().div_(255.0) if x.dtype == torch.uint8 else x).to(dtype)

    failures = stream_batches(
        items,
        size,
        apply,
        policy=DevicePolicy(torch.device("cpu")),
        batch_size=batch_size,
        num_workers=num_workers,
        on_error=on_error,
        bit_depth=bit_depth,
    )
    return out, failures, kinds
