"""Deprecated: use :mod:`codafeat.fewshot.split` (the few-shot modules live in :mod:`codafeat.fewshot`).

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .fewshot.split import (
    FewShotSplit,
)

__all__ = ["FewShotSplit"]

warnings.warn(
    "codafeat.fewshot_split is deprecated and will be removed in the next release: "
    "import from codafeat.fewshot.split (or codafeat.fewshot)",
    DeprecationWarning,
    stacklevel=2,
)
