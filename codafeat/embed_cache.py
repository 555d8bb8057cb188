"""Deprecated: use :mod:`codafeat.data.cache.embeddings`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .data.cache.embeddings import *  # noqa: F401, F403

warnings.warn(
    "codafeat.embed_cache is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.embeddings",
    DeprecationWarning,
    stacklevel=2,
)
