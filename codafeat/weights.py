"""The codafeat weights format and the registry of installed weights.

A codafeat weights file is a `safetensors <https://huggingface.co/docs/safetensors>`_
file. Its tensors are the backbone's ``state_dict`` under the prefix ``backbone.``
(other prefixes, e.g. ``head.``, may hold extra tensors and are ignored by the encoder).
Its metadata key ``codafeat_config`` holds the model config as JSON::

    {"format_version": 1, "backbone": "convnext_base", "embed_dim": 1024,
     "image_size": 224, "in_chans": 3, "mean": [...], "std": [...],
     "codafeat_version": "0.1.0", "training": {...}}

Loading never unpickles anything. Named weights come from installed distributions that
register an entry point in the group ``codafeat.weights`` whose object is a callable
returning the path of the file (see :func:`list_weights`, and
``codafeat package-weights`` to build such a distribution).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._version import __version__

FORMAT_VERSION = 1
CONFIG_KEY = "codafeat_config"
BACKBONE_PREFIX = "backbone."
ENTRY_POINT_GROUP = "codafeat.weights"
_REQUIRED = {"backbone": str, "embed_dim": int, "image_size": int, "mean": list, "std": list}


class WeightsError(ValueError):
    """A weights file or name is invalid: not safetensors, no config, or mismatched tensors."""


def make_config(
    *,
    backbone: str,
    embed_dim: int,
    image_size: int,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    in_chans: int = 3,
    pooling: str = "avg",
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config dictionary stored in a weights file's metadata."""
    return {
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
    }


def _check_config(config: Any, source: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise WeightsError(f"{source}: the codafeat config must be a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in config:
            raise WeightsError(f"{source}: the codafeat config lacks {key!r}")
        if not isinstance(config[key], typ) or isinstance(config[key], bool):
            raise WeightsError(f"{source}: config {key!r} must be {typ.__name__}, got {config[key]!r}")
    if int(config.get("format_version", 1)) > FORMAT_VERSION:
        raise WeightsError(
            f"{source}: format version {config['format_version']} is newer than this codafeat "
            f"({__version__}) understands; upgrade codafeat"
        )
    config.setdefault("in_chans", 3)
    config.setdefault("pooling", "avg")
    config.setdefault("training", {})
    return config


def weights_to_bytes(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, prefix: str = BACKBONE_PREFIX) -> bytes:
    """Serialise a backbone ``state`` (keys without prefix) and ``config`` to safetensors bytes.

    ``state`` keys that already carry a ``"<name>."`` prefix of another part may be passed
    with ``prefix=""``.
    """
    cfg = _check_config(json.loads(json.dumps(dict(config))), "config")
    tensors = {prefix + k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return st_save(tensors, metadata={CONFIG_KEY: json.dumps(cfg, sort_keys=True)})


def weights_from_bytes(data: bytes, *, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors bytes into ``(backbone_state, config)``; never unpickles."""
    try:
        tensors = st_load(data)
        meta = _read_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{source}: not a valid safetensors file ({exc})") from exc
    if CONFIG_KEY not in meta:
        raise WeightsError(
            f"{source}: safetensors file without a {CONFIG_KEY!r} metadata entry; it was not "
            "written by codafeat (use codafeat.save_weights)"
        )
    try:
        config = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{source}: the {CONFIG_KEY!r} metadata is not valid JSON ({exc})") from exc
    config = _check_config(config, source)
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX)}
    if not state:
        raise WeightsError(f"{source}: no tensors under the prefix {BACKBONE_PREFIX!r}")
    return state, config


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("bad header length")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    return meta


def save_weights(path: str | os.PathLike, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write a weights file atomically (temporary file, then rename) and return its path."""
    data = weights_to_bytes(state, config)
    return atomic_write_bytes(path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash never leaves a half-written file there."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def load_weights(spec: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(backbone_state, config)`` from a file path or a registered weights name."""
    path = resolve_weights(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc})") from exc
    return weights_from_bytes(data, source=str(path))


def read_config(spec: str | os.PathLike) -> dict[str, Any]:
    """The config of a weights file or registered name (reads the header only)."""
    path = resolve_weights(spec)
    with open(path, "rb") as fh:
        head = fh.read(8)
        try:
            n = int.from_bytes(head, "little")
            meta = _read_metadata(head + fh.read(n))
            return _check_config(json.loads(meta[CONFIG_KEY]), str(path))
        except (ValueError, KeyError) as exc:
            raise WeightsError(f"{path}: not a codafeat weights file ({exc})") from exc


# --------------------------------------------------------------------------- registry
def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def list_weights() -> list[str]:
    """Names of the weights registered by installed distributions, sorted.

    A distribution registers weights with an entry point in the group
    ``codafeat.weights``: ``NAME = module:function``, where ``function()`` returns the
    path of a codafeat safetensors file.
    """
    return sorted({ep.name for ep in _entry_points()})


def registered_path(name: str) -> Path:
    """The file behind a registered weights name.

    Raises
    ------
    WeightsError
        If no installed distribution registers ``name``, or its file is missing.
    """
    matches = [ep for ep in _entry_points() if ep.name == name]
    if not matches:
        names = list_weights()
        raise WeightsError(
            f"weights {name!r} is neither an existing file nor a registered name; registered: "
            f"{names if names else 'none (pip install a codafeat-weights-* package)'}"
        )
    ep = matches[0]
    try:
        obj = ep.load()
        value = obj() if callable(obj) else obj
    except Exception as exc:
        raise WeightsError(f"registered weights {name!r} ({ep.value}) failed to load: {exc}") from exc
    path = Path(os.fspath(value))
    if not path.is_file():
        raise WeightsError(f"registered weights {name!r} points to a missing file {str(path)!r}")
    return path


def resolve_weights(spec: str | os.PathLike) -> Path:
    """A weights file path: ``spec`` itself when it is a file, else a registered name."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path or a registered name, got {type(spec).__name__}")
    path = Path(spec)
    if path.is_file():
        return path
    text = os.fspath(spec)
    if path.suffix == ".safetensors" or os.sep in text or path.exists():
        raise WeightsError(f"weights file {text!r} does not exist (or is not a file)")
    return registered_path(text)


# --------------------------------------------------------------------------- in memory
class Weights:
    """Immutable in-memory codafeat weights (the bytes of a weights file).

    Estimators accept it wherever they accept a weights path; it is what
    :class:`~codafeat.CodaPretrainer` hands to the encoder it returns. Copies (and
    therefore :func:`sklearn.base.clone`) share the same immutable bytes.

    Parameters
    ----------
    data : bytes
        The content of a codafeat safetensors file.
    source : str, default="<memory>"
        A name for messages.
    """

    __slots__ = ("_data", "_config", "_source")

    def __init__(self, data: bytes, *, source: str = "<memory>") -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"Weights data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        _, config = weights_from_bytes(data, source=source)
        self._data = data
        self._config = config
        self._source = source

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, source: str = "<memory>") -> "Weights":
        """Build from a backbone ``state_dict`` and a config (see :func:`make_config`)."""
        return cls(weights_to_bytes(state, config), source=source)

    @classmethod
    def from_file(cls, spec: str | os.PathLike) -> "Weights":
        """Read a weights file or registered name."""
        path = resolve_weights(spec)
        return cls(path.read_bytes(), source=str(path))

    @property
    def data(self) -> bytes:
        """The safetensors bytes."""
        return self._data

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the model config."""
        return json.loads(json.dumps(self._config))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone tensors (fresh copies)."""
        return weights_from_bytes(self._data, source=self._source)[0]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights to ``path`` (atomically)."""
        return atomic_write_bytes(path, self._data)

    def __deepcopy__(self, memo: dict) -> "Weights":
        return self

    def __copy__(self) -> "Weights":
        return self

    def __reduce__(self):
        return (_weights_from_pickle, (self._data, self._source))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Weights) and other._data == self._data

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        c = self._config
        epochs = c.get("training", {}).get("epochs")
        extra = f", epochs={epochs}" if epochs is not None else ""
        return f"Weights(backbone={c['backbone']!r}, image_size={c['image_size']}, {len(self._data) / 1e6:.1f} MB{extra})"


def _weights_from_pickle(data: bytes, source: str) -> Weights:
    return Weights(data, source=source)


def load_any(spec: "str | os.PathLike | Weights") -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """``(state, config, source)`` from a path, a registered name or :class:`Weights`."""
    if isinstance(spec, Weights):
        return spec.state_dict(), spec.config, spec._source
    state, config = load_weights(spec)
    return state, config, os.fspath(spec)
