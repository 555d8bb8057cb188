"""Deprecated: use :mod:`codafeat.data.cache.tag_index`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .cache.tag_index import *  # noqa: F401, F403

warnings.warn(
    "codafeat.data.tag_index is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.tag_index",
    DeprecationWarning,
    stacklevel=2,
)
