"""The callback idea both epoch loops share (codafeat._train.callbacks)."""

from __future__ import annotations

import pytest

from codafeat._train.callbacks import Callback, Callbacks


class Log(Callback):
    def __init__(self, name, log, stop_after=None):
        self.name, self.log, self.stop_after = name, log, stop_after

    def on_epoch_end(self, epoch, record, trainer):
        self.log.append((self.name, "end", epoch, len(trainer)))
        record[self.name] = epoch

    def after_epoch(self, epoch, history, trainer):
        self.log.append((self.name, "after", epoch, len(history)))
        self.stop_training = self.stop_after is not None and epoch >= self.stop_after

    def on_train_end(self, history, trainer):
        self.log.append((self.name, "train_end", len(history)))

    def close(self):
        self.log.append((self.name, "close"))


def test_every_callback_completes_the_record_before_any_sees_the_history():
    log, history, trainer = [], [], []
    cbs = Callbacks([Log("a", log), Log("b", log)])
    assert cbs.end_epoch(0, {"loss": 1.0}, history, trainer) is False
    assert history == [{"loss": 1.0, "a": 0, "b": 0}]
    assert log == [("a", "end", 0, 0), ("b", "end", 0, 0), ("a", "after", 0, 1), ("b", "after", 0, 1)]


def test_one_callback_asking_to_stop_stops_and_the_hooks_run_in_order():
    log, history = [], []
    cbs = Callbacks([Log("a", log), Log("b", log, stop_after=1)])
    stops = [cbs.end_epoch(e, {}, history, []) for e in range(2)]
    cbs.end_training(history, [])
    cbs.close()
    assert stops == [False, True]
    assert log[-4:] == [("a", "train_end", 2), ("b", "train_end", 2), ("a", "close"), ("b", "close")]


def test_find_returns_the_first_of_a_kind():
    a, b = Log("a", []), Log("b", [])
    assert Callbacks([a, b]).find(Log) is a and Callbacks([]).find(Log) is None
    assert Callbacks([a]).find(int) is None


def test_the_base_callback_does_nothing_and_never_stops():
    record, history = {"loss": 2.0}, []
    assert Callbacks([Callback()]).end_epoch(0, record, history, None) is False
    assert history == [{"loss": 2.0}]


def test_a_failing_hook_propagates():
    class Boom(Callback):
        def after_epoch(self, epoch, history, trainer):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Callbacks([Boom()]).end_epoch(0, {}, [], None)
