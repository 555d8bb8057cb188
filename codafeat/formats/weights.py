"""The codafeat weights file: its bytes, reading and writing it, and in-memory :class:`Weights`.

A codafeat weights file is a `safetensors <https://huggingface.co/docs/safetensors>`_
file, and a timm checkpoint: its tensors are the backbone's ``state_dict`` under timm's own
names (the classification model without its classifier, ``num_classes=0``), so that

    timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=PATH))
    timm.create_model(name, checkpoint_path=PATH, num_classes=0)
    timm.create_model(name, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=PATH))

load it with no conversion. Its metadata key ``codafeat_config`` holds the model config as
JSON (timm ignores it)::

    {"format_version": 2, "backbone": "convnext_base", "embed_dim": 1024,
     "image_size": 224, "in_chans": 3, "mean": [...], "std": [...],
     "codafeat_version": "0.2.0", "training": {...}}

Files of format version 1 (codafeat 0.1) kept the tensors under the prefix ``backbone.``
(other prefixes held extra tensors); they still load.

Loading never unpickles anything. Named weights come from installed distributions (the
registry, :mod:`codafeat.formats.registry`; :func:`build_weights_wheel` / ``codafeat
package-weights`` build them, and docs/publishing-weights.md walks through publishing). The
config's fields and checks are :mod:`codafeat.formats.config`. This module imports both, so
``from codafeat.formats.weights import ...`` reaches the whole format.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save

from .._fileio import atomic_open, atomic_write_bytes  # noqa: F401  (re-exported: public since 0.1)
from .._version import __version__  # noqa: F401  (re-exported)
from .config import (  # noqa: F401  (re-exported: this module is the format's one import)
    CONFIG_MAXIMA,
    DEFAULT_INTENDED_USE,
    FORMAT_VERSION,
    check_config,
    config_json,
    make_config,
)
from .errors import WeightsError
from .registry import ENTRY_POINT_GROUP, list_weights, registered_path, resolve_weights  # noqa: F401

logger = logging.getLogger(__name__)

CONFIG_KEY = "codafeat_config"
#: Where format-1 files kept the backbone tensors.
BACKBONE_PREFIX = "backbone."
#: Largest safetensors header accepted (the limit of the safetensors library itself).
MAX_HEADER_BYTES = 100_000_000


def weights_to_bytes(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, prefix: str = "") -> bytes:
    """Serialise a backbone ``state`` (keys without prefix) and ``config`` to safetensors bytes.

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        The backbone ``state_dict`` (any device; copied to the CPU).
    config : mapping
        The model config (see :func:`make_config`); validated.
    prefix : str, default=""
        Prepended to every key. A weights file keeps timm's names (no prefix); a model
        holding the backbone as a part (the pickled estimators) is stored as it is.

    Returns
    -------
    bytes
        The content of a codafeat safetensors file.

    Raises
    ------
    WeightsError
        If ``config`` is invalid or ``state`` is empty.
    TypeError
        If a value of ``state`` is not a tensor.
    """
    meta = config_json(config)
    if not state:
        raise WeightsError("cannot save weights without tensors: the state dict is empty")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict value {key!r} is a {type(value).__name__}, not a torch.Tensor")
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        ident = (str(storage.device), storage.data_ptr())
        if t.numel() and ident in seen:
            t = t.clone()  # tied tensors: safetensors refuses shared storage
        seen.add(ident)
        tensors[prefix + key] = t
    return st_save(tensors, metadata={CONFIG_KEY: meta})


def _parse_header(header: bytes, source: str) -> dict[str, Any]:
    """The codafeat config from the JSON header of a safetensors file."""
    try:
        parsed = json.loads(header)
    except RecursionError:
        raise WeightsError(f"{source}: its header is JSON nested too deeply to be a safetensors header") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{source}: not a safetensors file (its header is not JSON: {exc})") from exc
    if not isinstance(parsed, dict):
        raise WeightsError(f"{source}: not a safetensors file (its header is not a JSON object)")
    meta = parsed.get("__metadata__") or {}
    if not isinstance(meta, dict) or CONFIG_KEY not in meta:
        raise WeightsError(
            f"{source}: safetensors file without a {CONFIG_KEY!r} metadata entry; it was not "
            "written by codafeat (use codafeat.save_weights or CodaEncoder.save)"
        )
    try:
        config = json.loads(meta[CONFIG_KEY])
    except RecursionError:
        raise WeightsError(f"{source}: the {CONFIG_KEY!r} metadata is JSON nested too deeply to be a config") from None
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: the {CONFIG_KEY!r} metadata is not valid JSON ({exc})") from exc
    return check_config(config, source)


def _tensor_names(data: bytes, source: str) -> list[str]:
    """The tensor names of safetensors ``data``, after checking its header's layout (no tensor decoded).

    Every entry must name a dtype, a shape of non-negative integers and byte offsets inside
    the data, so that a later decode (:meth:`Weights.state_dict`) meets no structural surprise.
    """
    n = _header_length(data, len(data), source)
    try:
        parsed = json.loads(data[8 : 8 + n])
    except (RecursionError, ValueError, UnicodeDecodeError):
        raise WeightsError(f"{source}: not a safetensors file (unreadable header)") from None
    size = len(data) - 8 - n
    names = []
    for name, entry in parsed.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("dtype"), str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= size
        ):
            raise WeightsError(f"{source}: not a valid safetensors file (tensor {name!r} has a malformed entry)")
        names.append(name)
    return names


def _header_length(prefix: bytes, available: int, source: str) -> int:
    if len(prefix) < 8:
        raise WeightsError(f"{source}: not a safetensors file (only {len(prefix)} bytes)")
    n = int.from_bytes(prefix[:8], "little")
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > available:
        raise WeightsError(
            f"{source}: not a safetensors file (header length {n} does not fit a file of "
            f"{available} bytes); codafeat weights are safetensors files, never pickles"
        )
    return n


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose key starts with ``prefix``, with it removed.

    Examples
    --------
    >>> strip_prefix({"backbone.a": 1, "head.b": 2}, "backbone.")
    {'a': 1}
    """
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _backbone_state(
    tensors: dict[str, torch.Tensor], config: Mapping[str, Any], source: str
) -> dict[str, torch.Tensor]:
    """The backbone tensors of a weights file: all of them, or (format 1) those under ``backbone.``."""
    if config.get("format_version", 1) == 1:
        state = strip_prefix(tensors, BACKBONE_PREFIX)
        if not state:
            raise WeightsError(f"{source}: no tensors under the prefix {BACKBONE_PREFIX!r} (a format-1 file)")
    else:
        state = dict(tensors)
        if not state:
            raise WeightsError(f"{source}: the file holds no tensors")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[:3]}): the weights are "
            "corrupt or come from a diverged run"
        )
    return state


def module_state_from_bytes(data: bytes, *, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors bytes into ``(all tensors, config)``, keys as stored; never unpickles.

    Raises
    ------
    WeightsError
        If ``data`` is not a safetensors file or has no valid codafeat config. The message
        starts with ``source``.

    Examples
    --------
    >>> import torch
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> tensors, config = module_state_from_bytes(weights_to_bytes({"w": torch.ones(2)}, cfg, prefix="unet."))
    >>> list(tensors), config["backbone"]
    (['unet.w'], 'test_convnext')
    """
    n = _header_length(data, len(data), source)
    config = _parse_header(data[8 : 8 + n], source)
    try:
        tensors = st_load(data if isinstance(data, bytes) else bytes(data))
    except (SafetensorError, ValueError) as exc:
        raise WeightsError(f"{source}: not a valid safetensors file ({exc})") from exc
    return tensors, config


def weights_from_bytes(data: bytes, *, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors bytes into ``(backbone_state, config)``; never unpickles.

    Raises
    ------
    WeightsError
        If ``data`` is not a safetensors file, has no valid codafeat config, or has no
        backbone tensors. The message starts with ``source``.

    Examples
    --------
    >>> import torch
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> state, config = weights_from_bytes(weights_to_bytes({"stem.weight": torch.ones(2)}, cfg))
    >>> list(state), config["image_size"]
    (['stem.weight'], 32)
    """
    tensors, config = module_state_from_bytes(data, source=source)
    return _backbone_state(tensors, config, source), config


def save_weights(path: str | os.PathLike, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write a weights file atomically (temporary file, then rename) and return its path.

    Examples
    --------
    >>> import tempfile, torch
    >>> from codafeat.formats.weights import make_config, save_weights, load_weights
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32,
    ...                   mean=[0.5] * 3, std=[0.25] * 3)
    >>> path = save_weights(tempfile.mkdtemp() + "/w.safetensors", {"w": torch.ones(2)}, cfg)
    >>> state, config = load_weights(path)
    >>> state["w"].tolist(), config["backbone"]
    ([1.0, 1.0], 'test_convnext')
    """
    data = weights_to_bytes(state, config)
    return atomic_write_bytes(path, data)


def load_weights(spec: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(backbone_state, config)`` from a file path or a registered weights name.

    The header is checked first (:func:`read_config`), then the tensors are read with
    safetensors; nothing is unpickled.

    Raises
    ------
    WeightsError
        If the file is missing, unreadable, not safetensors, or not a codafeat file.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.safetensors"
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> _ = save_weights(path, {"stem.weight": torch.ones(2)}, cfg)
    >>> state, config = load_weights(path)
    >>> list(state), config["backbone"]
    (['stem.weight'], 'test_convnext')
    """
    path = resolve_weights(spec)
    config = _read_config_file(path)
    try:
        tensors = st_load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
    return _backbone_state(tensors, config, str(path)), config


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            n = _header_length(fh.read(8), size, str(path))
            header = fh.read(n)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc})") from exc
    return _parse_header(header, str(path))


def read_config(spec: str | os.PathLike) -> dict[str, Any]:
    """The config of a weights file or registered name (reads the header only).

    Raises
    ------
    WeightsError
        If the file is missing or is not a codafeat weights file.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.safetensors"
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> _ = save_weights(path, {"stem.weight": torch.ones(2)}, cfg)
    >>> read_config(path)["image_size"]  # the header only: no tensor is read
    32
    """
    return _read_config_file(resolve_weights(spec))


# --------------------------------------------------------------------------- in memory
class Weights:
    """Immutable in-memory codafeat weights (the bytes of a weights file).

    Estimators accept it wherever they accept a weights path; it is what
    :class:`~codafeat.CodaPretrainer` hands to the encoder it returns. Copies (and
    therefore :func:`sklearn.base.clone`) share the same immutable bytes; pickles hold
    the safetensors bytes, and unpickling validates them again.

    Building one checks the header only (the config, and every tensor entry's dtype, shape
    and byte range); the tensors are decoded when :meth:`state_dict` asks for them, where
    NaN or infinite values raise. Writing a file from a state dict therefore serialises the
    tensors once and decodes nothing.

    Parameters
    ----------
    data : bytes
        The content of a codafeat safetensors file.
    source : str, default="<memory>"
        A name for messages.

    Raises
    ------
    WeightsError
        If ``data`` is not codafeat weights.

    Examples
    --------
    >>> import torch
    >>> from codafeat.formats.weights import Weights, make_config
    >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32,
    ...                   mean=[0.5] * 3, std=[0.25] * 3)
    >>> w = Weights.from_state({"w": torch.zeros(3)}, cfg)
    >>> w.config["backbone"], w.state_dict()["w"].shape
    ('test_convnext', torch.Size([3]))
    """

    __slots__ = ("_data", "_config", "_source")

    def __init__(self, data: bytes, *, source: str = "<memory>") -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Weights data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        config = _parse_header(data[8 : 8 + _header_length(data, len(data), source)], source)
        names = _tensor_names(data, source)
        if config.get("format_version", 1) == 1 and not any(k.startswith(BACKBONE_PREFIX) for k in names):
            raise WeightsError(f"{source}: no tensors under the prefix {BACKBONE_PREFIX!r} (a format-1 file)")
        if not names:
            raise WeightsError(f"{source}: the file holds no tensors")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_source", str(source))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Weights is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Weights is immutable; cannot delete {name!r}")

    @classmethod
    def from_state(
        cls, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, source: str = "<memory>"
    ) -> Weights:
        """Build from a backbone ``state_dict`` and a config (see :func:`make_config`)."""
        return cls(weights_to_bytes(state, config), source=source)

    @classmethod
    def from_file(cls, spec: str | os.PathLike) -> Weights:
        """Read a weights file or registered name."""
        path = resolve_weights(spec)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WeightsError(f"{path}: cannot read weights file ({exc})") from exc
        return cls(data, source=str(path))

    def with_config(self, **changes: Any) -> Weights:
        """A copy whose config has ``changes`` (e.g. ``license=``, ``intended_use=``); same tensors.

        Examples
        --------
        >>> import torch
        >>> cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
        >>> w = Weights.from_state({"w": torch.zeros(1)}, cfg).with_config(license="cc-by-4.0")
        >>> w.config["license"]
        'cc-by-4.0'
        """
        return Weights.from_state(self.state_dict(), {**self._config, **changes}, source=self._source)

    @property
    def data(self) -> bytes:
        """The safetensors bytes."""
        return self._data

    @property
    def source(self) -> str:
        """Where the weights came from (for messages)."""
        return self._source

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the model config."""
        return json.loads(json.dumps(self._config))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone tensors (fresh copies, decoded now).

        Raises
        ------
        WeightsError
            If a tensor cannot be decoded or holds NaN or infinite values.
        """
        return weights_from_bytes(self._data, source=self._source)[0]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights to ``path`` (atomically)."""
        return atomic_write_bytes(path, self._data)

    def __deepcopy__(self, memo: dict) -> Weights:
        return self

    def __copy__(self) -> Weights:
        return self

    def __reduce__(self):
        return (_weights_from_pickle, (self._data, self._source))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Weights):
            return NotImplemented
        return other._data == self._data

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        c = self._config
        epochs = c["training"].get("epochs")
        extra = f", epochs={epochs}" if epochs is not None else ""
        return (
            f"Weights(backbone={c['backbone']!r}, image_size={c['image_size']}, "
            f"embed_dim={c['embed_dim']}, {len(self._data) / 1e6:.1f} MB{extra})"
        )


def _weights_from_pickle(data: bytes, source: str) -> Weights:
    return Weights(data, source=source)


def load_codafeat(spec: str | os.PathLike | Weights) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """``(state, config, source)`` of codafeat weights: a file, a registered name or :class:`Weights`.

    Estimators read their ``weights`` through :func:`codafeat.formats.timm.load_any`, the one
    ``load_any``, which also reads timm and hub folders and plain timm checkpoints and calls
    this for codafeat's own files.
    """
    if isinstance(spec, Weights):
        return spec.state_dict(), spec.config, spec.source
    state, config = load_weights(spec)
    return state, config, os.fspath(spec)
