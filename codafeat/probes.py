"""Deprecated: use :mod:`codafeat.fewshot.probes` (the few-shot modules live in :mod:`codafeat.fewshot`).

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .fewshot.probes import (
    DEFAULT_FRACTIONS,
    FewShotReport,
    FewShotSplit,
    KNNProbe,
    default_scoring,
    few_shot_report,
    format_table,
    knn_probe,
    linear_probe,
    make_knn_probe,
    make_linear_probe,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "FewShotReport",
    "FewShotSplit",
    "KNNProbe",
    "default_scoring",
    "few_shot_report",
    "format_table",
    "knn_probe",
    "linear_probe",
    "make_knn_probe",
    "make_linear_probe",
]

warnings.warn(
    "codafeat.probes is deprecated and will be removed in the next release: "
    "import from codafeat.fewshot.probes (or codafeat.fewshot)",
    DeprecationWarning,
    stacklevel=2,
)
