"""The suite cannot fail by chance in CI: property tests are derandomized there (issue 19, item 14)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _draws(tmp_path: Path, env: dict[str, str]) -> str:
    """Run a property test in a fresh pytest process with this suite's conftest; return what it drew."""
    test = tmp_path / "test_draw.py"
    out = tmp_path / "drawn.txt"
    test.write_text(
        textwrap.dedent(f"""
        from hypothesis import given, settings, strategies as st

        @settings(max_examples=5)
        @given(st.integers(0, 10**9))
        def test_draw(n):
            with open({str(out)!r}, "a") as f:
                f.write(f"{{n}}\\n")
    """)
    )
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    if out.exists():
        out.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")} | env
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(test)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out.read_text()


@pytest.mark.slow
def test_ci_profile_draws_the_same_examples_every_run(tmp_path):
    first = _draws(tmp_path, {"CI": "true"})
    assert first == _draws(tmp_path, {"CI": "true"})
    assert len(first.split()) >= 5


@pytest.mark.slow
def test_local_runs_stay_random(tmp_path):
    """Without CI, hypothesis explores: two runs draw different examples (so the CI test above can fail)."""
    assert _draws(tmp_path, {}) != _draws(tmp_path, {})
