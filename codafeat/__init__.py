"""codafeat: Coda foundation models for radiographs, as scikit-learn estimators.

Public API
----------
CodaEncoder
    Pretrained (or random) backbone as a scikit-learn transformer.
Weights, save_weights, load_weights, list_weights
    The safetensors weights format and the registry of installed weights.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .encoder import CodaEncoder
from .weights import Weights, WeightsError, list_weights, load_weights, save_weights
from .data.io import ImageReadError

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CodaEncoder",
    "ImageReadError",
    "Weights",
    "WeightsError",
    "__version__",
    "list_weights",
    "load_weights",
    "save_weights",
]
