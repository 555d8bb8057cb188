"""The pretraining epoch loop and its callbacks (codafeat/_train/pretraining.py), with a stand-in trainer."""

from __future__ import annotations

import pytest

from codafeat._train import pretraining as P
from codafeat._train.dist import DistInfo


class FakeTrainer:
    """Records what the loop asks of it; each epoch's record is what run_epoch returns."""

    steps_per_epoch = 2
    dist = DistInfo()
    teacher = intra_loss = None

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[int, dict]] = []
        self.fail_at = fail_at

    def teacher_temp(self, epoch: int) -> float:
        return 0.04

    def run_epoch(self, loader, epoch, *, progress=None, seed=0, postfix=None):
        if epoch == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append((epoch, dict(postfix or {})))
        return {
            "epoch": epoch + 1,
            "loss": 1.0 / (epoch + 1),
            "loss_inter": 0.5,
            "loss_intra": 0.5,
            "images_per_s": 10.0,
            "inter_skipped_steps": 0,
        }


class Recorder(P.Callback):
    def __init__(self, log: list) -> None:
        self.log = log

    def on_epoch_end(self, epoch, record, trainer):
        record["seen"] = True
        self.log.append(("end", epoch, "seen" in record))

    def after_epoch(self, epoch, history, trainer):
        self.log.append(("after", epoch, len(history)))

    def close(self):
        self.log.append(("close",))


def test_epochs_from_the_start_epoch_extend_the_history_and_call_back_in_order():
    log, epochs_set = [], []
    history = [{"epoch": 1}]
    out = P.fit_pretraining(
        FakeTrainer(),
        None,
        epochs=3,
        start_epoch=1,
        history=history,
        set_epoch=epochs_set.append,
        callbacks=[Recorder(log)],
        extra=lambda: {"skipped_files": 2},
    )
    assert out is history and [r["epoch"] for r in out] == [1, 2, 3] and epochs_set == [1, 2]
    assert all(r["skipped_files"] == 2 and r["seen"] for r in out[1:])
    assert log == [("end", 1, True), ("after", 1, 2), ("end", 2, True), ("after", 2, 3), ("close",)]


def test_callbacks_are_closed_when_training_stops():
    log = []
    with pytest.raises(KeyboardInterrupt):
        P.fit_pretraining(FakeTrainer(fail_at=1), None, epochs=3, callbacks=[Recorder(log)])
    assert log[-1] == ("close",) and ("after", 0, 1) in log


class FakeMonitor:
    def __init__(self) -> None:
        self.epochs: list[float] = []

    def measure(self, teacher, intra_loss, teacher_temp):
        self.epochs.append(teacher_temp)
        return {"monitor_knn_accuracy": 0.9, "monitor_nmi": 0.5, "teacher_entropy": 1.0, "ln_k": 4.0}


def test_the_monitor_runs_every_n_epochs_and_at_the_last_and_its_figures_reach_the_progress_bar():
    monitor, trainer = FakeMonitor(), FakeTrainer()
    report = P.ReportCallback(epochs=5, info=DistInfo())
    history = P.fit_pretraining(
        trainer, None, epochs=5, callbacks=[P.MonitorCallback(monitor, every=2, epochs=5, info=DistInfo()), report]
    )
    assert [("monitor_knn_accuracy" in r) for r in history] == [False, True, False, True, True]
    assert history[1]["collapse_warnings"] == [] and len(monitor.epochs) == 3
    assert trainer.calls[0][1] == {} and trainer.calls[2][1] == {"knn": "0.900", "nmi": "0.500", "H_t/lnK": "0.25"}


def test_checkpoints_every_n_epochs_and_at_the_last(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(
        P.resume,
        "save",
        lambda d, trainer, *, epochs_done, history, **facts: saved.append((epochs_done, len(history), facts["params"])),
    )
    cb = P.CheckpointCallback(tmp_path, every=2, epochs=5, info=DistInfo(), record=lambda: {"params": {"lr": 1}})
    P.fit_pretraining(FakeTrainer(), None, epochs=5, callbacks=[cb])
    assert saved == [(2, 2, {"lr": 1}), (4, 4, {"lr": 1}), (5, 5, {"lr": 1})]


def test_the_metrics_sink_writes_every_record(tmp_path):
    import json

    P.fit_pretraining(
        FakeTrainer(),
        None,
        epochs=2,
        callbacks=[P.MetricsSinkCallback(tmp_path, keep_through_epoch=0, info=DistInfo())],
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
