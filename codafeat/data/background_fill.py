"""Deprecated: use :mod:`codafeat.data.cache.background_fill`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .cache.background_fill import *  # noqa: F401, F403

warnings.warn(
    "codafeat.data.background_fill is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.background_fill",
    DeprecationWarning,
    stacklevel=2,
)
