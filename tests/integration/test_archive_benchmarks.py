"""benchmarks/organs_scan.py and benchmarks/embed_ranks.py --dry-run: both run end to end and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Child processes and benchmark dry runs: `pytest -m "not slow"` leaves them out of a quick local loop.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_organs_scan_dry_run_reports_both_runs_and_the_table():
    pytest.importorskip("pydicom")
    out = _run("organs_scan.py", "--dry-run")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "on 300 synthetic DICOM headers" in text and "| second run, nothing changed |" in text
    assert "'PORT CHEST'" in text and "282 of 300 file(s) labelled" in text
    assert "unmapped: " in text and "'UNKNOWN PART'" in text


def test_embed_ranks_dry_run_reports_three_runs_with_the_same_bytes():
    out = _run("embed_ranks.py", "--dry-run")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "| torchrun, 2 processes x 1 thread |" in text and "| one process, 2 threads |" in text
    assert "marginal images/s" in text and "same bytes in all three runs: True" in text


def test_index_scale_dry_run_compares_the_backends():
    """benchmarks/index_scale.py --dry-run: every backend on 2k vectors, recall against the exact scan."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "index_scale.py"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| 2000 |")]
    assert rows and rows[0][1].strip() == "exact" and float(rows[0][5]) == 1.0
    for row in rows:
        if row[1].strip() == "faiss":
            assert float(row[5]) == 1.0, "FAISS flat is exact"
