"""Sphinx configuration of codafeat's API reference and user guide (scikit-learn's stack:
numpydoc, the PyData theme, sphinx-gallery).

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors; CI builds it
in tests/integration/test_docs.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codafeat  # noqa: E402

project = "codafeat"
author = "codafeat developers"
copyright = "2026, codafeat developers"  # noqa: A001  (Sphinx's name)
release = codafeat.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
templates_path = ["_templates"]

# One page per public estimator and function, from the docstrings.
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False  # the class template lists the methods
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Markdown pages (the README's tour, the changelog, the design notes): headings get anchors;
# links to repository files that are not doc pages are plain links, not cross-references.
myst_heading_anchors = 3
suppress_warnings = [
    "myst.xref_missing",
    "myst.header",
    "config.cache",  # sphinx_gallery_conf holds a function (reset_argv), so Sphinx cannot pickle it
]

# No network: intersphinx inventories are not fetched.
intersphinx_mapping: dict = {}

html_theme = "pydata_sphinx_theme"
html_title = f"codafeat {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []

# The examples: executed when they run in under a minute on 2 CPU cores (their defaults use
# tiny models), shown with their code otherwise.
EXECUTED = ["pipeline_quickstart", "few_shot_probe", "zero_shot_plot"]
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/(" + "|".join(EXECUTED) + r")\.py$",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_argv": lambda gallery_conf, script_vars: [],
    "matplotlib_animations": False,
    "plot_gallery": os.environ.get("CODAFEAT_DOCS_EXECUTE", "1") != "0",
    "abort_on_example_error": True,
    "show_memory": False,
}
