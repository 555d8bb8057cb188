"""codafeat: Coda foundation models for radiographs, as scikit-learn estimators.

Public API
----------
CodaPretrainer
    Coda's teacher-student pretraining on an organ-per-folder image set; yields an encoder.
CodaEncoder
    Pretrained (or random) backbone as a scikit-learn transformer.
CodaSegmenter
    U-Net fine-tuning on a pretrained encoder.
CodaClassifier, CodaRegressor
    The paper's transfer protocol: a linear head on the pretrained backbone, all fine-tuned;
    ``explain`` gives their class activation maps.
CodaIndex
    Similar-case search over an archive (exact, or FAISS).
FewShotSplit, few_shot_report, format_table, knn_probe, linear_probe
    Few-shot evaluation protocols (the paper's Table 1) as scikit-learn tools.
organ_separation, variant_separation, plot_embedding
    Zero-shot analysis of embeddings (the paper's Fig. 2).
make_radiograph_phantoms
    Synthetic demonstration data.
ImageReadError, SkippedImagesWarning
    An unreadable image (the error names it); images skipped with ``on_error="skip"``.
Weights, save_weights, load_weights, read_config, list_weights, build_weights_wheel
    The safetensors weights format and the registry of installed weights.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ._version import __version__  # noqa: F401  (in __all__)

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import codafeat`` and ``codafeat --help`` do not pay for torch, timm and sklearn.
_EXPORTS = {
    "organ_separation": "analysis",
    "plot_embedding": "analysis",
    "variant_separation": "analysis",
    "ImageReadError": "data.io",
    "SkippedImagesWarning": "_estimator.infer",
    "make_radiograph_phantoms": "phantoms",
    "CodaClassifier": "classifier",
    "CodaEncoder": "encoder",
    "dice": "metrics",
    "iou": "metrics",
    "CodaPretrainer": "pretrain",
    "CodaRegressor": "regressor",
    "FewShotSplit": "fewshot",
    "CodaIndex": "index",
    "few_shot_report": "fewshot",
    "format_table": "fewshot",
    "knn_probe": "fewshot",
    "linear_probe": "fewshot",
    "RECIPES": "recipes",
    "get_recipe": "recipes",
    "CodaSegmenter": "segment",
    "Weights": "formats.weights",
    "WeightsError": "formats.weights",
    "list_weights": "formats.weights",
    "load_weights": "formats.weights",
    "read_config": "formats.weights",
    "save_weights": "formats.weights",
    "build_weights_wheel": "formats.wheel",
    "export_timm": "formats.timm",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
