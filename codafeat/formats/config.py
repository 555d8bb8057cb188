"""The config of a codafeat weights file: what it records, its defaults and its checks.

:func:`make_config` builds the dictionary stored under the ``codafeat_config`` metadata key
of a weights file (:mod:`codafeat.formats.weights`); :func:`check_config` validates one read
back from a file, a hub folder or a pickle, filling the defaults of older files, and
:func:`config_json` is its canonical JSON text. A config is data from a file: every value
is checked (types, ranges, sizes) before an estimator allocates anything from it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from .._defaults import FEATURES, GRID_SIZE, MAX_IMAGE_SIZE, POOLING
from .._version import __version__
from .errors import WeightsError

__all__ = ["CONFIG_MAXIMA", "DEFAULT_INTENDED_USE", "FORMAT_VERSION", "check_config", "config_json", "make_config"]

#: 2: tensors under timm's names; 1 (codafeat 0.1): under the prefix ``backbone.``.
FORMAT_VERSION = 2


def make_config(
    *,
    backbone: str,
    embed_dim: int,
    image_size: int,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    in_chans: int = 3,
    pooling: str = POOLING,
    training: Mapping[str, Any] | None = None,
    license: str | None = None,
    intended_use: str | None = None,
    data: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config dictionary stored in a weights file's metadata.

    Parameters
    ----------
    backbone : str
        timm model name.
    embed_dim : int
        Size of the pooled embedding.
    image_size : int
        Side of the square input the weights were trained at.
    mean, std : sequence of float
        Per-channel normalisation of the backbone input (``in_chans`` values each).
    in_chans : int, default=3
        Input channels of the backbone.
    pooling : str, default="avg"
        Global pooling of the last feature map.
    training : mapping or None
        A JSON-serialisable summary of how the weights were obtained.
    license : str or None
        Licence of the weights (an SPDX identifier such as ``"cc-by-4.0"``); ``None``:
        ``"unknown"``. Weights trained on data with terms of use inherit them: say so.
    intended_use : str or None
        What the weights are for; ``None``: :data:`DEFAULT_INTENDED_USE`.
    data : mapping or None
        A summary of the training data (organs with counts, number of images, a hash of the
        list of files, DICOM manufacturers and body parts), see
        :meth:`codafeat.CodaPretrainer.fit`.
    extra : mapping or None
        Further JSON-serialisable top-level entries of a model built on the backbone
        (e.g. the segmenter's ``n_classes``); they may not replace the keys above.

    Returns
    -------
    dict
        The config, including ``format_version`` and ``codafeat_version``.

    Raises
    ------
    ValueError
        If ``extra`` names one of the standard keys.

    Examples
    --------
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32,
    ...                   mean=[0.5] * 3, std=[0.5] * 3, extra={"n_classes": 2})
    >>> cfg["backbone"], cfg["in_chans"], cfg["n_classes"]
    ('test_convnext', 3, 2)
    """
    config = {
        "format_version": FORMAT_VERSION,
        "backbone": str(backbone),
        "embed_dim": int(embed_dim),
        "image_size": int(image_size),
        "in_chans": int(in_chans),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "pooling": str(pooling),
        "codafeat_version": __version__,
        "training": dict(training or {}),
        "license": str(license or "unknown"),
        "intended_use": str(intended_use or DEFAULT_INTENDED_USE),
        "data": dict(data or {}),
    }
    clash = sorted(set(extra or {}) & set(config))
    if clash:
        raise ValueError(f"extra config entries may not replace standard keys: {clash}")
    config.update(extra or {})
    return config


#: The intended use recorded when none is given.
DEFAULT_INTENDED_USE = (
    "Research on radiograph representations (feature extraction, probing, fine-tuning). "
    "Not a medical device; not for clinical decisions."
)

#: Largest config values a weights file may declare (far above any real model; a file
#: declaring more is corrupt or hostile, and would make the encoder allocate absurdly).
CONFIG_MAXIMA = {"embed_dim": 2**16, "image_size": MAX_IMAGE_SIZE, "in_chans": 16}


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_config(config: Any, source: str) -> dict[str, Any]:
    """Validate a config (as decoded from JSON) and return a copy with defaults filled in."""
    if not isinstance(config, dict):
        raise WeightsError(f"{source}: the codafeat config must be a JSON object, got {type(config).__name__}")
    cfg = dict(config)
    version = cfg.get("format_version", 1)
    if not _is_int(version) or version < 1:
        raise WeightsError(f"{source}: config 'format_version' must be a positive int, got {version!r}")
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{source}: format version {version} is newer than this codafeat ({__version__}, format "
            f"version {FORMAT_VERSION}) understands; upgrade codafeat"
        )
    for key in ("backbone", "embed_dim", "image_size", "mean", "std"):
        if key not in cfg:
            raise WeightsError(f"{source}: the codafeat config lacks {key!r}")
    cfg.setdefault("in_chans", 3)
    cfg.setdefault("pooling", POOLING)
    cfg.setdefault("training", {})
    _check_card(cfg, source)
    return cfg


def _check_card(cfg: dict[str, Any], source: str) -> None:
    """Defaults and checks of the model-card fields (``license``, ``intended_use``, ``data``) and ``intensity``."""
    cfg.setdefault("license", "unknown")
    cfg.setdefault("intended_use", DEFAULT_INTENDED_USE)
    cfg.setdefault("data", {})
    for key in ("license", "intended_use"):
        if not isinstance(cfg[key], str):
            raise WeightsError(f"{source}: config {key!r} must be a string, got {cfg[key]!r}")
    if not isinstance(cfg["data"], dict):
        raise WeightsError(f"{source}: config 'data' must be a JSON object, got {cfg['data']!r}")
    intensity = cfg.get("intensity")
    if intensity is not None:
        depth = intensity.get("bit_depth") if isinstance(intensity, dict) else None
        if (
            not isinstance(intensity, dict)
            or not isinstance(intensity.get("kinds", {}), dict)
            or (depth is not None and not (_is_int(depth) and 9 <= depth <= 32))
        ):
            raise WeightsError(
                f"{source}: config 'intensity' must be {{'bit_depth': None or 9..32, 'kinds': {{...}}}}, "
                f"got {intensity!r}"
            )
    if not isinstance(cfg["backbone"], str) or not cfg["backbone"]:
        raise WeightsError(f"{source}: config 'backbone' must be a non-empty str, got {cfg['backbone']!r}")
    for key in ("embed_dim", "image_size", "in_chans"):
        if not _is_int(cfg[key]) or not 1 <= cfg[key] <= CONFIG_MAXIMA[key]:
            raise WeightsError(
                f"{source}: config {key!r} must be an int in [1, {CONFIG_MAXIMA[key]}], got {cfg[key]!r}"
            )
    for key in ("mean", "std"):
        values = cfg[key]
        if not isinstance(values, list) or not all(
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise WeightsError(f"{source}: config {key!r} must be a list of finite numbers, got {values!r}")
        if len(values) != cfg["in_chans"]:
            raise WeightsError(f"{source}: config {key!r} has {len(values)} values but 'in_chans' is {cfg['in_chans']}")
    if any(s <= 0 for s in cfg["std"]):
        raise WeightsError(f"{source}: config 'std' values must be positive, got {cfg['std']!r}")
    from ..nn.backbone import POOLINGS

    if cfg["pooling"] not in POOLINGS:
        raise WeightsError(f"{source}: config 'pooling' must be one of {POOLINGS}, got {cfg['pooling']!r}")
    if not isinstance(cfg["training"], dict):
        raise WeightsError(f"{source}: config 'training' must be a JSON object, got {cfg['training']!r}")
    from ..nn.backbone import check_features

    try:  # absent in most files: the encoder then uses FEATURES and GRID_SIZE
        check_features(cfg.get("features", FEATURES), cfg.get("grid_size", GRID_SIZE))
    except ValueError as exc:
        raise WeightsError(f"{source}: config {exc}") from None


def _json_default(obj: Any) -> Any:
    """Make numpy / torch scalars and arrays in a config (e.g. a training history) JSON-able."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"config value {obj!r} of type {type(obj).__name__} is not JSON serialisable")


def config_json(config: Mapping[str, Any]) -> str:
    """Validated, canonical JSON text of ``config``."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (see make_config), got {type(config).__name__}")
    try:
        plain = json.loads(json.dumps(dict(config), default=_json_default))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"config is not JSON serialisable: {exc}") from exc
    return json.dumps(check_config(plain, "config"), sort_keys=True)
