"""Deprecated: use :mod:`codafeat.data.cache.decoded`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .cache.decoded import *  # noqa: F401, F403

warnings.warn(
    "codafeat.data.decoded_cache is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.decoded",
    DeprecationWarning,
    stacklevel=2,
)
