"""Deprecated: use :mod:`codafeat.data.cache.shards`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .cache.shards import *  # noqa: F401, F403

warnings.warn(
    "codafeat.data.shards is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.shards",
    DeprecationWarning,
    stacklevel=2,
)
