"""Deprecated: use :mod:`codafeat.formats.model_card`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .formats.model_card import *  # noqa: F401, F403

warnings.warn(
    "codafeat.model_card is deprecated and will be removed in the next release: "
    "import from codafeat.formats.model_card",
    DeprecationWarning,
    stacklevel=2,
)
