"""Deprecated: use :mod:`codafeat.formats.timm`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .formats.timm import *  # noqa: F401, F403

warnings.warn(
    "codafeat.timm_io is deprecated and will be removed in the next release: import from codafeat.formats.timm",
    DeprecationWarning,
    stacklevel=2,
)
