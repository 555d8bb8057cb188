"""The pretraining epoch loop, beside the fine-tuning one (:func:`codafeat._train.finetune.fit_epochs`).

:func:`fit_pretraining` trains the epochs from ``start_epoch`` and hands every epoch's record
to callbacks, each with one job:

* :class:`MonitorCallback`: the training monitor's figures (rank 0, broadcast), every
  ``monitor_every`` epochs and at the last;
* :class:`ReportCallback`: the epoch's log line, the single-organ warning, and the monitor
  figures shown beside the progress bar;
* :class:`MetricsSinkCallback`: ``metrics.jsonl`` and TensorBoard (rank 0);
* :class:`CheckpointCallback`: a checkpoint every ``checkpoint_every`` epochs and at the
  last (rank 0 writes, every rank waits).

The callbacks follow :class:`codafeat._train.callbacks.Callback`, the idea the fine-tuning
loop shares: ``on_epoch_end(epoch, record, trainer)`` may add fields to the record before it
enters the history, ``after_epoch(epoch, history, trainer)`` sees it there, ``close()`` runs
whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import dist as D
from . import resume
from .callbacks import Callback, Callbacks
from .loop import CodaTrainer
from .metrics_sink import MetricsSink
from .monitor import TrainingMonitor, collapse_warnings

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointCallback",
    "MetricsSinkCallback",
    "MonitorCallback",
    "ReportCallback",
    "fit_pretraining",
]

#: The first epoch whose monitor figures can raise a collapse warning (a fresh teacher's
#: targets are uniform by construction).
WARN_FROM_EPOCH = 2


def _due(done: int, every: int, epochs: int) -> bool:
    return every > 0 and (done % every == 0 or done == epochs)


class MonitorCallback(Callback):
    """The monitor's figures (measured on rank 0, the same on every rank) and collapse warnings."""

    def __init__(self, monitor: TrainingMonitor, *, every: int, epochs: int, info: D.DistInfo) -> None:
        self.monitor, self.every, self.epochs, self.info = monitor, every, epochs, info

    def on_epoch_end(self, epoch: int, record: dict[str, Any], trainer: CodaTrainer) -> None:
        if not _due(epoch + 1, self.every, self.epochs):
            return
        figures: dict[str, Any] = {}
        if self.info.is_main:
            figures = self.monitor.measure(trainer.teacher, trainer.intra_loss, trainer.teacher_temp(epoch))
            warnings = collapse_warnings(figures) if epoch + 1 >= WARN_FROM_EPOCH else []
            for msg in warnings:
                logger.warning("epoch %d: %s", epoch + 1, msg)
            figures["collapse_warnings"] = warnings
        record.update(D.broadcast_object(figures, self.info))


class ReportCallback(Callback):
    """The epoch's log line and warnings (rank 0), and the monitor figures beside the progress bar."""

    def __init__(self, *, epochs: int, info: D.DistInfo) -> None:
        self.epochs, self.info = epochs, info
        #: What the progress bar shows after the losses (the last monitor figures).
        self.postfix: dict[str, str] = {}

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: CodaTrainer) -> None:
        record = history[-1]
        if not self.info.is_main:
            return
        monitor = (
            f" | monitor kNN {record['monitor_knn_accuracy']:.3f} NMI {record['monitor_nmi']:.3f}"
            if "monitor_knn_accuracy" in record
            else ""
        )
        logger.info(
            "epoch %d/%d loss %.4f (inter %.4f, intra %.4f) %.1f img/s%s",
            record["epoch"],
            self.epochs,
            record["loss"],
            record["loss_inter"],
            record["loss_intra"],
            record["images_per_s"],
            monitor,
        )
        if record["inter_skipped_steps"]:
            logger.warning(
                "epoch %d: %d step(s) had a single organ in the batch; their inter-organ term was skipped",
                record["epoch"],
                record["inter_skipped_steps"],
            )
        if "monitor_knn_accuracy" in record:
            self.postfix = {"knn": f"{record['monitor_knn_accuracy']:.3f}", "nmi": f"{record['monitor_nmi']:.3f}"}
            if "teacher_entropy" in record:
                self.postfix["H_t/lnK"] = f"{record['teacher_entropy'] / record['ln_k']:.2f}"


class MetricsSinkCallback(Callback):
    """Every record to ``metrics.jsonl`` (and TensorBoard) in ``log_dir``, on rank 0."""

    def __init__(self, log_dir: Any, *, keep_through_epoch: int, info: D.DistInfo) -> None:
        self.sink = MetricsSink(log_dir, keep_through_epoch=keep_through_epoch) if info.is_main else None

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: CodaTrainer) -> None:
        if self.sink is not None:
            self.sink.write(history[-1])

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class CheckpointCallback(Callback):
    """A checkpoint every ``every`` epochs and at the last; rank 0 writes, every rank waits."""

    def __init__(
        self, checkpoint_dir: Any, *, every: int, epochs: int, info: D.DistInfo, record: Callable[[], dict[str, Any]]
    ) -> None:
        self.checkpoint_dir, self.every, self.epochs, self.info = checkpoint_dir, every, epochs, info
        #: What the checkpoint records besides the networks: params, organs and the run's facts.
        self.record = record

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: CodaTrainer) -> None:
        if not _due(epoch + 1, self.every, self.epochs):
            return
        if self.info.is_main:
            resume.save(self.checkpoint_dir, trainer, epochs_done=epoch + 1, history=history, **self.record())
        D.barrier(self.info)


def fit_pretraining(
    trainer: CodaTrainer,
    loader: Any,
    *,
    epochs: int,
    start_epoch: int = 0,
    history: list[dict[str, Any]] | None = None,
    seed: int = 0,
    set_epoch: Callable[[int], None] = lambda epoch: None,
    callbacks: Sequence[Callback] = (),
    extra: Callable[[], dict[str, Any]] = dict,
    verbose: int = 0,
) -> list[dict[str, Any]]:
    """Train the epochs ``start_epoch .. epochs - 1``; returns the history (the resumed one extended).

    ``set_epoch(epoch)`` reseeds the sampler and the views; ``extra()`` gives fields every
    record carries (``skipped_files``). A progress bar (``verbose`` on rank 0) shows the
    losses and, through the :class:`ReportCallback`, the last monitor figures.
    """
    history = [] if history is None else history
    steps = trainer.steps_per_epoch
    progress = None
    if verbose and trainer.dist.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=epochs * steps, initial=start_epoch * steps, desc="Coda pretraining", unit="step")
    cbs = Callbacks(callbacks)
    report = cbs.find(ReportCallback)
    try:
        with _logging_beside(progress):
            for epoch in range(start_epoch, epochs):
                set_epoch(epoch)
                postfix = report.postfix if report is not None else {}
                record = trainer.run_epoch(loader, epoch, progress=progress, seed=seed, postfix=postfix)
                record.update(extra())
                if cbs.end_epoch(epoch, record, history, trainer):
                    break
        cbs.end_training(history, trainer)
    finally:
        if progress is not None:
            progress.close()
        cbs.close()
    return history


def _logging_beside(progress: Any):
    """Route logging through tqdm while a progress bar is shown, so lines do not break it."""
    if progress is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger("codafeat")])
