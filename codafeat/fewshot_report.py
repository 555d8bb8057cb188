"""Deprecated: use :mod:`codafeat.fewshot.report` (the few-shot modules live in :mod:`codafeat.fewshot`).

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .fewshot.report import (
    FewShotReport,
    format_table,
)

__all__ = ["FewShotReport", "format_table"]

warnings.warn(
    "codafeat.fewshot_report is deprecated and will be removed in the next release: "
    "import from codafeat.fewshot.report (or codafeat.fewshot)",
    DeprecationWarning,
    stacklevel=2,
)
