"""codafeat weights and timm: export to the hub layout, and read timm checkpoints.

A codafeat weights file already is a timm checkpoint (see :mod:`codafeat.formats.weights`). This
module adds the two other directions a timm user expects:

* :func:`export_timm` writes a folder in timm's (and the Hugging Face hub's) layout,
  ``model.safetensors`` + ``config.json``, so that
  ``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds the backbone with no
  codafeat installed. The ``config.json`` carries timm's ``pretrained_cfg`` (architecture,
  features, input size, mean/std, licence) and codafeat's own config under ``"codafeat"``.
* :func:`load_any` reads whatever an estimator's ``weights`` may be: a codafeat file, an
  installed weights name, in-memory :class:`~codafeat.formats.weights.Weights`, such a folder, or a
  plain timm safetensors checkpoint (e.g. ImageNet weights already on disk), given the
  timm model name it holds. The classifier of a timm checkpoint is left out (codafeat
  backbones have none). Nothing is downloaded and nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as st_load_file

from .._defaults import MEAN, POOLING, STD
from .._fileio import atomic_write_many
from .weights import (
    CONFIG_KEY,
    Weights,
    WeightsError,
    check_config,
    make_config,
    weights_to_bytes,
)
from .weights import (
    load_codafeat as _load_codafeat,
)

__all__ = ["TIMM_CONFIG", "TIMM_WEIGHTS", "export_timm", "load_any"]

#: File names of timm's local-dir / hub layout.
TIMM_WEIGHTS = "model.safetensors"
TIMM_CONFIG = "config.json"

#: pretrained_cfg keys that point at a download location; an export has none.
_SOURCE_KEYS = ("url", "hf_hub_id", "hf_hub_filename", "file", "source", "state_dict", "tag")


def _timm_default_cfg(name: str) -> dict[str, Any]:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return {} if cfg is None else dict(cfg.to_dict())


def timm_config(config: Mapping[str, Any], *, license: str | None = None) -> dict[str, Any]:
    """timm's ``config.json`` for a codafeat config (see the module docstring).

    Examples
    --------
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> hf = timm_config(cfg, license="cc-by-4.0")
    >>> hf["architecture"], hf["num_classes"], hf["pretrained_cfg"]["input_size"], hf["pretrained_cfg"]["license"]
    ('test_convnext', 0, [3, 32, 32], 'cc-by-4.0')
    """
    name = config["backbone"]
    pretrained = {k: v for k, v in _timm_default_cfg(name).items() if k not in _SOURCE_KEYS}
    size = int(config["image_size"])
    pretrained.update(
        architecture=name,
        input_size=[int(config["in_chans"]), size, size],
        mean=list(config["mean"]),
        std=list(config["std"]),
        num_classes=0,
        crop_pct=1.0,  # codafeat resizes the whole field of view; nothing is cropped
        custom_load=False,
        license=license or config.get("license") or "unknown",
    )
    pretrained.pop("test_input_size", None)
    pretrained.pop("pool_size", None)
    return {
        "architecture": name,
        "num_classes": 0,
        "num_features": int(config["embed_dim"]),
        "global_pool": config.get("pooling", POOLING),
        "pretrained_cfg": pretrained,
        "codafeat": dict(config),
    }


def export_timm(weights: Any, out_dir: str | os.PathLike, *, license: str | None = None) -> Path:
    """Write ``weights`` as a timm / hub folder: ``model.safetensors`` and ``config.json``.

    Parameters
    ----------
    weights : str, path, Weights or CodaEncoder
        What :func:`load_any` reads (a fitted :class:`~codafeat.CodaEncoder` gives its
        ``get_weights()``).
    out_dir : str or path
        The folder (created). Both files are written as a set: all or nothing.
    license : str or None, default=None
        The licence recorded in ``config.json`` (timm's ``pretrained_cfg["license"]``);
        ``None`` keeps the weights' own (or ``"unknown"``).

    Returns
    -------
    Path
        ``out_dir``.

    Examples
    --------
    >>> import tempfile, timm
    >>> from codafeat import CodaEncoder
    >>> enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
    >>> out = export_timm(enc, tempfile.mkdtemp() + "/coda-test")
    >>> model = timm.create_model(f"local-dir:{out}", pretrained=True)
    >>> model.num_classes, model.num_features
    (0, 64)
    """
    if hasattr(weights, "get_weights"):
        weights = weights.get_weights()
    state, config, _ = load_any(weights)
    config = dict(config)
    if license is not None:
        config["license"] = str(license)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = weights_to_bytes(state, config)
    text = json.dumps(timm_config(config, license=license), indent=2) + "\n"
    atomic_write_many({out / TIMM_WEIGHTS: data, out / TIMM_CONFIG: text.encode("utf-8")})
    return out


def _has_codafeat_config(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return CONFIG_KEY in (fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise WeightsError(
            f"{path}: not a safetensors file ({exc}); codafeat reads weights only from safetensors, never pickles"
        ) from exc


def _classifier_keys(name: str) -> tuple[str, ...]:
    classifier = _timm_default_cfg(name).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{c}." for c in names)


def _timm_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a plain timm safetensors checkpoint of ``name``, without its classifier."""
    try:
        tensors = st_load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
    drop = _classifier_keys(name)
    return {k: v for k, v in tensors.items() if not (drop and k.startswith(drop))}


def _num_features(name: str) -> int:
    """The pooled feature size of timm model ``name`` (built on the meta device: no memory, no weights)."""
    import timm

    with torch.device("meta"):
        return int(timm.create_model(name, pretrained=False, num_classes=0).num_features)


def _plain_config(name: str, embed_dim: int | None, pretrained: Mapping[str, Any], source: str) -> dict[str, Any]:
    size = pretrained.get("input_size") or (3, 224, 224)
    return make_config(
        backbone=name,
        embed_dim=int(embed_dim or _num_features(name)),
        image_size=int(size[-1]),
        in_chans=int(size[0]),
        mean=pretrained.get("mean") or MEAN,
        std=pretrained.get("std") or STD,
        training={"init": "timm checkpoint", "file": source},
    )


def _read_dir(path: Path, backbone: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    weights, cfg_file = path / TIMM_WEIGHTS, path / TIMM_CONFIG
    if not weights.is_file() or not cfg_file.is_file():
        raise WeightsError(f"{path}: a weights folder holds {TIMM_WEIGHTS} and {TIMM_CONFIG} (timm's layout)")
    if _has_codafeat_config(weights):
        return _load_codafeat(weights)
    try:
        hf = json.loads(cfg_file.read_text(encoding="utf-8"))
        name = hf["architecture"]
    except RecursionError:
        raise WeightsError(f"{cfg_file}: JSON nested too deeply to be a timm config.json") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{cfg_file}: not a timm config.json with an 'architecture' ({exc})") from exc
    name = _local_model_name(name, cfg_file)
    if backbone is not None and backbone != name:
        raise ValueError(f"backbone={backbone!r} contradicts {cfg_file}, which describes a {name!r}")
    own = hf.get("pretrained_cfg") or {}
    if not isinstance(own, dict):
        raise WeightsError(f"{cfg_file}: 'pretrained_cfg' must be a JSON object, got {type(own).__name__}")
    pretrained = dict(_timm_default_cfg(name), **own)
    try:  # the same checks as codafeat's own config: sizes within bounds, finite mean/std
        config = check_config(_plain_config(name, hf.get("num_features"), pretrained, str(path)), str(cfg_file))
    except (TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{cfg_file}: malformed timm config ({exc})") from exc
    return _timm_state(weights, name), config, str(path)


def _local_model_name(name: Any, source: Any) -> str:
    """``name`` if it is a plain timm model name; never a hub or local-dir reference (nothing is fetched)."""
    import timm

    if not isinstance(name, str) or not name:
        raise WeightsError(f"{source}: 'architecture' must be a timm model name (a string), got {name!r}")
    if ":" in name or "/" in name:
        raise WeightsError(
            f"{source}: architecture {name!r} refers to another location (hub or folder); codafeat never downloads "
            "or follows such references: name a timm model, e.g. 'convnext_tiny'"
        )
    if not timm.is_model(name):
        raise WeightsError(f"{source}: architecture {name!r} is not a timm model name (see timm.list_models())")
    return name


def load_any(spec: Any, *, backbone: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """``(backbone state, config, source)`` of any accepted ``weights`` value.

    Parameters
    ----------
    spec : str, path or Weights
        A codafeat weights file, an installed weights name, :class:`~codafeat.formats.weights.Weights`,
        a timm / hub folder (``model.safetensors`` + ``config.json``), or a plain timm
        safetensors checkpoint.
    backbone : str or None
        The timm model a plain checkpoint holds (it records none); for the other forms a
        check that they hold this model, or ``None``.

    Raises
    ------
    WeightsError
        Unreadable, not safetensors, or a plain checkpoint without ``backbone``.
    ValueError
        ``backbone`` contradicts what the weights hold.

    Examples
    --------
    >>> import tempfile, timm
    >>> from safetensors.torch import save_file
    >>> path = tempfile.mkdtemp() + "/timm.safetensors"
    >>> save_file(timm.create_model("test_convnext").state_dict(), path)  # a plain timm checkpoint
    >>> state, config, source = load_any(path, backbone="test_convnext")
    >>> config["backbone"], any(k.startswith("head.fc") for k in state)
    ('test_convnext', False)
    """
    if isinstance(spec, Weights):
        state, config, source = _load_codafeat(spec)
    elif isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        state, config, source = _read_dir(Path(spec), backbone)
    elif isinstance(spec, (str, os.PathLike)) and Path(spec).is_file() and not _has_codafeat_config(Path(spec)):
        if backbone is None:
            raise WeightsError(
                f"{os.fspath(spec)}: a safetensors file without a codafeat config (a plain timm checkpoint?); "
                "pass backbone=<the timm model name it holds>"
            )
        path = Path(spec)
        backbone = _local_model_name(backbone, f"backbone for {path}")
        state = _timm_state(path, backbone)
        pretrained = _timm_default_cfg(backbone)
        state_config = _plain_config(backbone, None, pretrained, str(path))
        return state, state_config, str(path)
    else:
        state, config, source = _load_codafeat(spec)
    if backbone is not None and backbone != config["backbone"]:
        raise ValueError(
            f"backbone={backbone!r} contradicts the weights {source!r}, which hold a "
            f"{config['backbone']!r}; leave backbone=None to use the weights' backbone"
        )
    return state, config, source
