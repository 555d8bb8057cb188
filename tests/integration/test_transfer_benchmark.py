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
