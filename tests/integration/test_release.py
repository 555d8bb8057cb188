"""The release check (issue 29): the sdist and wheel build, hold what they must, and the wheel stands alone.

``python -m build`` makes both; ``check-wheel-contents`` and the assertions below check the
wheel (every module, ``py.typed``, the licence, the entry point); the wheel is installed,
with its declared dependencies only, into a fresh virtual environment, and used from a
temporary folder that holds no source tree: ``codafeat --version``, ``codafeat demo --help``,
a tiny ``Pipeline`` and a tiny fine-tuning fit. A module, a data file or a dependency missing
from the wheel fails one of these.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

import codafeat

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)], timeout=900)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return wheels[0], sdists[0]


def test_the_wheel_holds_every_module_the_licence_and_the_type_marker(dist):
    wheel, sdist = dist
    assert wheel.name == f"codafeat-{codafeat.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "codafeat").rglob("*.py")}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert "codafeat/py.typed" in names
    info = f"codafeat-{codafeat.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta and f"Version: {codafeat.__version__}" in meta
    for extra in ("dicom", "parquet", "plot", "index", "explain", "docs"):
        assert f"Provides-Extra: {extra}" in meta, extra
    entry = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "codafeat = codafeat.cli:run" in entry
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))], "only the package ships"
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "pyproject.toml", "codafeat/py.typed"} <= members
    pytest.importorskip("check_wheel_contents")
    _run([sys.executable, "-m", "check_wheel_contents", str(wheel)], timeout=300)


def test_the_wheel_installed_alone_runs_the_command_a_pipeline_and_a_fine_tuning_fit(dist, tmp_path):
    wheel, _ = dist
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], timeout=1500, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    exe = env_dir / "bin" / "codafeat"
    assert _run([str(exe), "--version"], cwd=work, env=env, timeout=120).stdout.strip() == (
        f"codafeat {codafeat.__version__}"
    )
    assert "usage: codafeat demo" in _run([str(exe), "demo", "--help"], cwd=work, env=env, timeout=120).stdout
    script = textwrap.dedent(
        """
        import numpy as np, codafeat
        from pathlib import Path
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from codafeat import CodaClassifier, CodaEncoder
        assert Path(codafeat.__file__).parent.parent.name == "site-packages", codafeat.__file__
        rng = np.random.default_rng(0)
        X = rng.uniform(0, 1, (12, 32, 32)).astype(np.float32)
        y = np.arange(12) % 2
        X[y == 1, :8, :8] += 0.8
        enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, num_workers=0)
        pipe = make_pipeline(enc, LogisticRegression()).fit(X, y)
        clf = CodaClassifier(backbone="test_convnext", image_size=32, epochs=1, num_workers=0).fit(X, y)
        print("ok", pipe.score(X, y), clf.predict(X[:2]).tolist())
        """
    )
    out = _run([str(python), "-c", script], cwd=work, env=env, timeout=600)
    assert out.stdout.startswith("ok ")
