"""codafeat: Coda foundation models for radiographs, as scikit-learn estimators.

Public API
----------
CodaPretrainer
    Coda's teacher-student pretraining on an organ-per-folder image set; yields an encoder.
CodaEncoder
    Pretrained (or random) backbone as a scikit-learn transformer.
CodaSegmenter
    U-Net fine-tuning on a pretrained encoder.
FewShotSplit, few_shot_report, format_table, knn_probe, linear_probe
    Few-shot evaluation protocols (the paper's Table 1) as scikit-learn tools.
organ_separation, variant_separation, plot_embedding
    Zero-shot analysis of embeddings (the paper's Fig. 2).
make_radiograph_phantoms
    Synthetic demonstration data.
Weights, save_weights, load_weights, read_config, list_weights, build_weights_wheel
    The safetensors weights format and the registry of installed weights.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .analysis import organ_separation, plot_embedding, variant_separation
from .data.io import ImageReadError
from .datasets import make_radiograph_phantoms
from .encoder import CodaEncoder
from .metrics import dice, iou
from .pretrain import CodaPretrainer
from .probes import FewShotSplit, few_shot_report, format_table, knn_probe, linear_probe
from .recipes import RECIPES, get_recipe
from .segment import CodaSegmenter
from .weights import (
    Weights,
    WeightsError,
    build_weights_wheel,
    list_weights,
    load_weights,
    read_config,
    save_weights,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "RECIPES",
    "get_recipe",
    "CodaEncoder",
    "CodaPretrainer",
    "CodaSegmenter",
    "FewShotSplit",
    "ImageReadError",
    "Weights",
    "WeightsError",
    "__version__",
    "build_weights_wheel",
    "dice",
    "few_shot_report",
    "format_table",
    "iou",
    "knn_probe",
    "linear_probe",
    "list_weights",
    "load_weights",
    "make_radiograph_phantoms",
    "organ_separation",
    "plot_embedding",
    "read_config",
    "save_weights",
    "variant_separation",
]
