"""Deprecated: use :mod:`codafeat.data.cache.leases`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .cache.leases import *  # noqa: F401, F403

warnings.warn(
    "codafeat.data.leases is deprecated and will be removed in the next release: "
    "import from codafeat.data.cache.leases",
    DeprecationWarning,
    stacklevel=2,
)
