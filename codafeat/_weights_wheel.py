"""Deprecated: use :mod:`codafeat.formats.wheel`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .formats.wheel import *  # noqa: F401, F403

warnings.warn(
    "codafeat._weights_wheel is deprecated and will be removed in the next release: import from codafeat.formats.wheel",
    DeprecationWarning,
    stacklevel=2,
)
