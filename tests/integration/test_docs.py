"""The API reference and user guide (docs/): every public name has its page, and the site builds without warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import codafeat

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _reference_names() -> set[str]:
    """Names listed in the autosummary blocks of docs/api.rst under ``.. currentmodule:: codafeat``."""
    names, inside, module = set(), False, ""
    for line in (DOCS / "api.rst").read_text().splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::")[1].strip()
        if line.startswith(".. autosummary::"):
            inside = module == "codafeat"
        elif inside and re.match(r"^   [A-Za-z_]\w*$", line):
            names.add(line.strip())
        elif inside and line and not line.startswith(" "):
            inside = False
    return names


def test_every_public_name_is_in_the_reference():
    public = {n for n in codafeat.__all__ if not n.startswith("__")}
    listed = _reference_names()
    assert public - listed == set(), f"public names missing from docs/api.rst: {sorted(public - listed)}"
    assert listed - public == set(), f"docs/api.rst lists names codafeat does not export: {sorted(listed - public)}"


@pytest.mark.slow
def test_the_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W``: every docstring renders, every page links, the gallery's quick examples run."""
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    pytest.importorskip("pydata_sphinx_theme")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("myst_parser")
    build = tmp_path / "html"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(build),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    for page in (
        "index.html",
        "api.html",
        "user_guide.html",
        "changelog.html",
        "generated/codafeat.CodaEncoder.html",
        "auto_examples/index.html",
        "auto_examples/pipeline_quickstart.html",
    ):
        assert (build / page).is_file(), page
    quick = (build / "auto_examples" / "pipeline_quickstart.html").read_text()
    assert "sphx-glr-script-out" in quick, "the quick example ran and its output is on the page"
    encoder_page = (build / "generated" / "codafeat.CodaEncoder.html").read_text()
    assert 'id="codafeat.CodaEncoder.transform"' in encoder_page and "Examples" in encoder_page
