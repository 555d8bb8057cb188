"""benchmarks/gpu_check.sh --dry-run: the prepared device check runs end to end on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Child processes and benchmark dry runs: `pytest -m "not slow"` leaves them out of a quick local loop.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_prints_the_results_block():
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=420,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "### Device check (dry run)" in text
    assert "| step, eager, batch 4 | 4 |" in text and "| step, compiled, batch 4 | 4 |" in text
    assert "Encoder on 8 PNGs of 128 px" in text and "ratio **" in text
    assert "finite losses: True" in text
    assert "Embedding 8 PNGs: one process" in text and "torchrun with 2 process(es)" in text
    assert "same bytes: True" in text


def test_gpu_check_refuses_a_full_run_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full check would run")
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert out.returncode == 2 and "no GPU here" in out.stderr
