"""benchmarks/scale.py --dry-run: the scale benchmark runs end to end and reports every figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Child processes and benchmark dry runs: `pytest -m "not slow"` leaves them out of a quick local loop.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_scale_benchmark_dry_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "scale.py"),
            "--dry-run",
            "--workers",
            "0",
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    table = out.stdout.split("\n\n", 1)[-1]
    assert "| 200 (" in table and "| 400 (" in table
    assert "second run to first step" in table and "encoder peak RSS" in table
    assert not any(tmp_path.iterdir()), "the generated files are removed afterwards"
