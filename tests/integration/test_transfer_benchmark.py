"""benchmarks/transfer.py --dry-run: the transfer benchmark runs end to end and writes its tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: A benchmark dry run in a child process: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_transfer_dry_run_pretrains_probes_fine_tunes_and_resumes(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Another section\n\nkept\n")
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "transfer.py"),
        "--dry-run",
        "--out",
        str(tmp_path / "out"),
        "--results-file",
        str(results),
        "--threads",
        "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = results.read_text()
    assert "## Another section\n\nkept" in text
    for title in (
        "### NIH pneumonia",
        "### Bone age",
        "### JSRT heart segmentation",
        "### Knee KL grade",
        "Linear probe (frozen):",
        "Fine-tuning:",
        "Fine-tuning (U-Net):",
        "| predict the training mean |",
        "| Coda (both) |",
        "| inter-organ only |",
        "| intra-organ only |",
        "| random init |",
        "| raw pixels |",
    ):
        assert title in text, title
    cells = sorted((tmp_path / "out" / "cells").glob("finetune__*.json"))
    assert len(cells) == 4 * 3 * 2  # encoders x tasks (nih, boneage, knee) x fractions (1 draw)
    assert all(0.0 <= json.loads(c.read_text())["score"] <= 1.0 for c in cells if "boneage" not in c.name)
    assert len(list((tmp_path / "out" / "cells").glob("segment__*__heart__*.json"))) == 4 * 2
    # --resume skips every finished cell: a second run fine-tunes nothing
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0 and "finetune coda" not in again.stdout + again.stderr


def test_monitor_figure_draws_every_run_and_tabulates_the_last_epoch(tmp_path):
    """benchmarks/monitor_figure.py: one line per run and panel, a table of each run's last epoch."""
    pytest.importorskip("matplotlib")
    runs = []
    for name, spread in (("a", [0.09, 0.07, 0.05]), ("b", [0.08, 0.08, 0.081])):
        path = tmp_path / f"{name}.jsonl"
        rows = [
            {"epoch": e, "monitor_knn_accuracy": 0.5 + 0.1 * e, "organ_spread": s, "organ_rank": 10.0 + e}
            for e, s in enumerate(spread)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))  # read back in epoch order
        runs.append(f"{name}={path}")
    (tmp_path / "old.jsonl").write_text(json.dumps({"epoch": 0, "monitor_knn_accuracy": 0.9}) + "\n")
    runs.append(f"old={tmp_path / 'old.jsonl'}")  # a run from before the spread was recorded
    figure = tmp_path / "fig" / "monitor.png"
    cmd = [sys.executable, str(REPO / "benchmarks" / "monitor_figure.py"), "--out", str(figure), *runs]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.stdout.splitlines()
    assert "| a | 3 | 0.700 | 0.050 | 12.000 |" in table
    assert "| b | 3 | 0.700 | 0.081 | 12.000 |" in table
    assert "| old | 1 | 0.900 | – | – |" in table
    bad = subprocess.run(cmd[:-1] + ["no-equals-sign"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "NAME=METRICS_JSONL" in bad.stderr
