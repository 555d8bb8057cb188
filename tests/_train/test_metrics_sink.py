"""MetricsSink: monitoring output never costs the run (issue 19, items 3 and 13)."""

from __future__ import annotations

import json
import shutil

import pytest

from codafeat._train import metrics_sink
from codafeat._train.metrics_sink import MetricsSink
from codafeat.pretrain import CodaPretrainer

from helpers import TINY_PRETRAIN as TINY
from helpers import make_organ_folder


def test_a_failed_write_warns_once_and_does_not_raise(tmp_path, caplog):
    sink = MetricsSink(tmp_path / "logs")
    sink.write({"epoch": 1, "loss": 1.0})
    shutil.rmtree(tmp_path / "logs")
    with pytest.warns(RuntimeWarning, match="cannot write training metrics"):
        sink.write({"epoch": 2, "loss": 0.5})
    sink.write({"epoch": 3, "loss": 0.4})  # no second warning, no exception
    assert sink.failures == 2
    assert sum("cannot write training metrics" in r.getMessage() for r in caplog.records) == 1


def test_fit_survives_its_log_dir_vanishing_after_epoch_1(tmp_path, monkeypatch):
    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=2)
    logs = tmp_path / "logs"
    original = metrics_sink.MetricsSink.write

    def write_then_lose_the_folder(self, record):
        original(self, record)
        if record.get("epoch") == 1:
            shutil.rmtree(logs)

    monkeypatch.setattr(metrics_sink.MetricsSink, "write", write_then_lose_the_folder)
    with pytest.warns(RuntimeWarning, match="cannot write training metrics"):
        pre = CodaPretrainer(**dict(TINY, epochs=2, log_dir=logs)).fit(folder)
    assert len(pre.history_) == 2 and hasattr(pre, "encoder_")


def test_a_metrics_file_that_is_not_utf8_is_named_and_its_bad_lines_dropped(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        json.dumps({"epoch": 1}).encode() + b"\n\xff\xfe garbage\n" + json.dumps({"epoch": 2}).encode() + b"\n"
    )
    MetricsSink(tmp_path, keep_through_epoch=2).close()
    assert [json.loads(x)["epoch"] for x in path.read_text().splitlines()] == [1, 2]
    assert any(str(path) in r.getMessage() and "UTF-8" in r.getMessage() for r in caplog.records)
