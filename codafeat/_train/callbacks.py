"""The callback idea shared by the pretraining and fine-tuning epoch loops.

Both loops (:func:`codafeat._train.pretraining.fit_pretraining` and
:func:`codafeat._train.finetune.fit_epochs`) train epochs and hand each epoch's record to a
list of callbacks, each with one job (a monitor, a log line, a metrics file, checkpoints, a
progress bar, early stopping), as Keras's ``CallbackList`` and Lightning's callbacks do.

Examples
--------
>>> class Halve(Callback):
...     def on_epoch_end(self, epoch, record, trainer):
...         record["half"] = record["loss"] / 2
...     def after_epoch(self, epoch, history, trainer):
...         self.stop_training = len(history) == 2
>>> cbs, history = Callbacks([Halve()]), []
>>> [cbs.end_epoch(e, {"loss": 1.0}, history, trainer=None) for e in range(2)]
[False, True]
>>> history[0]
{'loss': 1.0, 'half': 0.5}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["Callback", "Callbacks"]

C = TypeVar("C")


class Callback:
    """A no-op base: override the hooks a job needs.

    A loop calls, for each epoch, :meth:`on_epoch_end` then :meth:`after_epoch`; after the
    last epoch of a run that did not fail, :meth:`on_train_end`; and :meth:`close` at the
    end whatever happened. A callback that sets :attr:`stop_training` ends training after
    the current epoch (under ``torchrun`` it must decide the same on every rank).
    """

    #: End training after this epoch.
    stop_training: bool = False

    def on_epoch_end(self, epoch: int, record: dict[str, Any], trainer: Any) -> None:
        """Before ``record`` enters the history: add fields to it."""

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: Any) -> None:
        """After the epoch's record entered ``history``."""

    def on_train_end(self, history: list[dict[str, Any]], trainer: Any) -> None:
        """After the last epoch, when training did not fail."""

    def close(self) -> None:
        """At the end of training, whatever happened."""


class Callbacks:
    """The callbacks of one run, called in their order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.items = list(callbacks)

    def end_epoch(self, epoch: int, record: dict[str, Any], history: list[dict[str, Any]], trainer: Any) -> bool:
        """Let each callback complete ``record``, append it to ``history``, tell them; ``True``: stop."""
        for cb in self.items:
            cb.on_epoch_end(epoch, record, trainer)
        history.append(record)
        for cb in self.items:
            cb.after_epoch(epoch, history, trainer)
        return any(cb.stop_training for cb in self.items)

    def end_training(self, history: list[dict[str, Any]], trainer: Any) -> None:
        for cb in self.items:
            cb.on_train_end(history, trainer)

    def close(self) -> None:
        for cb in self.items:
            cb.close()

    def find(self, kind: type[C]) -> C | None:
        """The first callback of type ``kind``, or ``None``."""
        return next((cb for cb in self.items if isinstance(cb, kind)), None)
