"""Deprecated: use :mod:`codafeat.formats.weights`.

This module re-exports its names for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .formats.weights import *  # noqa: F401, F403
from .formats.weights import _weights_from_pickle  # noqa: F401  (old pickles name it here)

warnings.warn(
    "codafeat.weights is deprecated and will be removed in the next release: import from codafeat.formats.weights",
    DeprecationWarning,
    stacklevel=2,
)
