"""The safetensors weights format and in-memory Weights (codafeat.formats.weights)."""

from __future__ import annotations

import copy
import json
import os
import pickle
import stat
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save as st_save
from sklearn.base import clone

import codafeat.formats.weights as W
from codafeat import CodaEncoder
from codafeat.formats.weights import (
    CONFIG_KEY,
    FORMAT_VERSION,
    Weights,
    WeightsError,
    atomic_open,
    atomic_write_bytes,
    load_weights,
    make_config,
    read_config,
    save_weights,
    weights_from_bytes,
    weights_to_bytes,
)

from helpers import tiny_config


# --------------------------------------------------------------------------- helpers
def bits(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor: bit-identity, NaNs included."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert tuple(a[k].shape) == tuple(b[k].shape), k
        assert bits(a[k]) == bits(b[k]), k


def raw_file(path: Path, tensors: dict, config) -> Path:
    """A safetensors file written without codafeat's checks (``config`` dumped as given)."""
    meta = None if config is None else {CONFIG_KEY: config if isinstance(config, str) else json.dumps(config)}
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


# --------------------------------------------------------------------------- round trip
def test_save_load_round_trip_is_bit_identical(tmp_path, tiny_state):
    cfg = tiny_config(training={"epochs": 3, "loss": [1.5, 0.25]})
    path = save_weights(tmp_path / "w.safetensors", tiny_state, cfg)
    assert path == tmp_path / "w.safetensors"
    state, config = load_weights(path)
    assert_same_state(state, tiny_state)
    assert config == cfg
    assert config["format_version"] == FORMAT_VERSION
    assert config["codafeat_version"] == W.__version__


def test_file_layout_is_documented_safetensors(tmp_path, tiny_state):
    """Read the file with safetensors itself and by hand: timm's names, metadata key, JSON config."""
    path = save_weights(tmp_path / "w.safetensors", tiny_state, tiny_config())
    with safe_open(path, framework="pt") as fh:
        keys = set(fh.keys())
        meta = fh.metadata()
    assert keys == set(tiny_state), "format 2 keeps timm's own tensor names (a timm checkpoint)"
    assert json.loads(meta[CONFIG_KEY]) == tiny_config()
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert json.loads(header["__metadata__"][CONFIG_KEY])["backbone"] == "test_convnext"


def test_encoder_save_and_reload_give_identical_embeddings(tmp_path, images):
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
    path = enc.save(tmp_path / "enc.safetensors")
    again = CodaEncoder(weights=path).fit()
    assert again.config_["backbone"] == "test_convnext"
    assert np.array_equal(enc.transform(images), again.transform(images))
    assert np.array_equal(enc.transform(images), CodaEncoder(weights=str(path)).fit().transform(images))


def test_non_contiguous_and_tied_tensors_round_trip(tiny_state):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"t": base.t(), "a": base, "tied": base}  # transposed view; two keys, one storage
    out, _ = weights_from_bytes(weights_to_bytes(state, tiny_config()))
    assert torch.equal(out["t"], base.t())
    assert torch.equal(out["a"], base) and torch.equal(out["tied"], base)


def test_numpy_values_in_training_summary_are_serialised(tiny_state):
    cfg = tiny_config(training={"loss": np.float32(0.5), "hist": np.arange(3), "epochs": np.int64(2)})
    _, config = weights_from_bytes(weights_to_bytes({"w": torch.ones(1)}, cfg))
    assert config["training"] == {"loss": 0.5, "hist": [0, 1, 2], "epochs": 2}


def test_unserialisable_config_value_is_a_clear_error():
    with pytest.raises(WeightsError, match="JSON"):
        weights_to_bytes({"w": torch.ones(1)}, tiny_config(training={"x": object()}))


def test_empty_state_and_non_tensor_values_are_rejected_when_saving(tmp_path):
    with pytest.raises(WeightsError, match="empty"):
        save_weights(tmp_path / "w.safetensors", {}, tiny_config())
    with pytest.raises(TypeError, match="'w'"):
        save_weights(tmp_path / "w.safetensors", {"w": [1.0]}, tiny_config())
    assert not list(tmp_path.iterdir())


def test_invalid_config_is_rejected_when_saving(tmp_path):
    cfg = tiny_config()
    del cfg["image_size"]
    with pytest.raises(WeightsError, match="'image_size'"):
        save_weights(tmp_path / "w.safetensors", {"w": torch.ones(1)}, cfg)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- atomic write
def test_failed_rename_leaves_old_file_intact(tmp_path, tiny_state, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old content")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_weights(path, tiny_state, tiny_config())
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # temporary file removed


def test_failure_mid_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "w.bin"
    atomic_write_bytes(path, b"version 1")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(path) as fh:
            fh.write(b"half of version 2")
            raise RuntimeError("crash")
    assert path.read_bytes() == b"version 1"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_atomic_write_replaces_creates_parents_and_uses_normal_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "w.bin"
    old = os.umask(0o022)
    try:
        atomic_write_bytes(path, b"one")
        atomic_write_bytes(path, b"two")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not the 0o600 of a private temp file


# --------------------------------------------------------------------------- never unpickle
class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"backbone.w": _Payload(marker)}))
    for attempt in (
        lambda: load_weights(evil),
        lambda: read_config(evil),
        lambda: Weights.from_file(evil),
        lambda: Weights(evil.read_bytes()),
        lambda: weights_from_bytes(evil.read_bytes()),
        lambda: CodaEncoder(weights=evil).fit(),
    ):
        with pytest.raises(WeightsError, match="evil.safetensors|not a safetensors"):
            attempt()
        assert not marker.exists()
    # The payload is live: unpickling it (what codafeat never does) would have run it.
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_torch_save_file_is_rejected_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2), "x": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01\x02", b"\xff" * 64, (10**9).to_bytes(8, "little") + b"{}", (4).to_bytes(8, "little") + b"[1,2]..."],
    ids=["empty", "short", "junk", "huge-header", "header-not-object"],
)
def test_files_that_are_not_safetensors_give_weights_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_weights(path)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        read_config(path)


# --------------------------------------------------------------------------- config checks
def test_safetensors_without_codafeat_config_is_a_clear_error(tmp_path):
    plain = raw_file(tmp_path / "plain.safetensors", {"backbone.w": torch.ones(2)}, None)
    with pytest.raises(WeightsError, match="codafeat_config.*not written by codafeat"):
        load_weights(plain)
    with pytest.raises(WeightsError, match="codafeat_config"):
        read_config(plain)
    other = tmp_path / "other.safetensors"
    other.write_bytes(st_save({"w": torch.ones(2)}, metadata={"format": "pt"}))
    with pytest.raises(WeightsError, match="codafeat_config"):
        load_weights(other)


def test_config_that_is_not_json_is_a_clear_error(tmp_path):
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, "{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_weights(path)


@pytest.mark.parametrize("key", ["backbone", "embed_dim", "image_size", "mean", "std"])
def test_config_missing_key_names_the_key(tmp_path, key):
    cfg = tiny_config()
    del cfg[key]
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, cfg)
    with pytest.raises(WeightsError, match=f"lacks '{key}'"):
        load_weights(path)
    with pytest.raises(WeightsError, match=f"lacks '{key}'"):
        read_config(path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("backbone", 3),
        ("backbone", ""),
        ("embed_dim", "64"),
        ("embed_dim", True),
        ("embed_dim", 0),
        ("image_size", 32.5),
        ("in_chans", "3"),
        ("mean", "0.5"),
        ("mean", [0.5, "a", 0.5]),
        ("mean", [0.5, 0.5]),
        ("std", [0.2, 0.0, 0.2]),
        ("std", [0.2, None, 0.2]),
        ("pooling", 1),
        ("training", []),
        ("format_version", "1"),
    ],
)
def test_config_wrong_type_names_the_key(tmp_path, key, value):
    cfg = tiny_config(**{key: value})
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, cfg)
    with pytest.raises(WeightsError, match=f"'{key}'"):
        load_weights(path)
    with pytest.raises(WeightsError, match=f"'{key}'"):
        weights_to_bytes({"w": torch.ones(2)}, cfg)


def test_config_not_an_object_is_rejected(tmp_path):
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, [1, 2])
    with pytest.raises(WeightsError, match="JSON object"):
        load_weights(path)


def test_newer_format_version_asks_to_upgrade(tmp_path):
    cfg = tiny_config(format_version=FORMAT_VERSION + 1)
    del cfg["mean"]  # a future format may differ: the version is reported first
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, cfg)
    with pytest.raises(WeightsError, match="newer.*upgrade codafeat"):
        load_weights(path)


def test_older_files_get_defaults(tmp_path):
    cfg = tiny_config()
    for key in ("in_chans", "pooling", "training", "format_version"):
        del cfg[key]
    path = raw_file(tmp_path / "w.safetensors", {"backbone.w": torch.ones(2)}, cfg)
    config = read_config(path)
    assert (config["in_chans"], config["pooling"], config["training"]) == (3, "avg", {})


def test_format_1_file_without_backbone_tensors_is_rejected(tmp_path):
    path = raw_file(tmp_path / "w.safetensors", {"head.w": torch.ones(2)}, tiny_config(format_version=1))
    with pytest.raises(WeightsError, match="no tensors under the prefix 'backbone.'"):
        load_weights(path)


def test_format_1_extra_prefixes_are_ignored(tmp_path, tiny_state):
    tensors = {"backbone." + k: v for k, v in tiny_state.items()}
    tensors["head.w"] = torch.ones(3)
    path = raw_file(tmp_path / "w.safetensors", tensors, tiny_config(format_version=1))
    state, _ = load_weights(path)
    assert_same_state(state, tiny_state)


def test_format_2_takes_every_tensor(tmp_path, tiny_state):
    path = raw_file(tmp_path / "w.safetensors", dict(tiny_state), tiny_config())
    state, config = load_weights(path)
    assert config["format_version"] == 2
    assert_same_state(state, tiny_state)


# --------------------------------------------------------------------------- tensors vs config
def test_tensors_of_another_backbone_are_a_clear_error(tmp_path, tiny_state):
    path = save_weights(tmp_path / "w.safetensors", tiny_state, tiny_config(backbone="convnext_atto"))
    with pytest.raises(ValueError, match=r"w\.safetensors.*do not match the backbone.*missing"):
        CodaEncoder(weights=path).fit()


def test_missing_tensor_is_a_clear_error(tmp_path, tiny_state):
    state = dict(tiny_state)
    dropped = sorted(state)[0]
    del state[dropped]
    path = save_weights(tmp_path / "w.safetensors", state, tiny_config())
    with pytest.raises(ValueError, match=f"1 missing tensor.*{dropped}"):
        CodaEncoder(weights=path).fit()


def test_reshaped_tensor_is_a_clear_error(tmp_path, tiny_state):
    state = dict(tiny_state)
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key].reshape(state[key].shape[0], -1)
    path = save_weights(tmp_path / "w.safetensors", state, tiny_config())
    with pytest.raises(ValueError, match=f"wrong shape.*{key}"):
        CodaEncoder(weights=path).fit()


def test_unexpected_tensor_is_a_clear_error(tmp_path, tiny_state):
    state = dict(tiny_state, extra_weight=torch.ones(2))
    path = save_weights(tmp_path / "w.safetensors", state, tiny_config())
    with pytest.raises(ValueError, match="unexpected tensor.*extra_weight"):
        CodaEncoder(weights=path).fit()


def test_wrong_embed_dim_is_a_clear_error(tmp_path, tiny_state):
    path = save_weights(tmp_path / "w.safetensors", tiny_state, tiny_config(embed_dim=65))
    with pytest.raises(ValueError, match="embed_dim"):
        CodaEncoder(weights=path).fit()


# --------------------------------------------------------------------------- read_config
def test_read_config_reads_only_the_header(tmp_path, tiny_state, monkeypatch):
    path = save_weights(tmp_path / "w.safetensors", tiny_state, tiny_config())
    truncated = tmp_path / "truncated.safetensors"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # header intact, tensor data cut
    assert read_config(truncated) == tiny_config()
    with pytest.raises(WeightsError, match="truncated.safetensors.*not a valid safetensors"):
        load_weights(truncated)

    def no_tensor_reading(*args, **kwargs):
        raise AssertionError("read_config must not read tensors")

    monkeypatch.setattr(W, "st_load", no_tensor_reading)
    monkeypatch.setattr(W, "st_load_file", no_tensor_reading)
    assert read_config(path)["embed_dim"] == 64


# --------------------------------------------------------------------------- Weights
@pytest.fixture(scope="module")
def weights(tiny_state) -> Weights:
    return Weights.from_state(tiny_state, tiny_config(training={"epochs": 7}))


def test_weights_pickle_round_trip(weights, tiny_state):
    again = pickle.loads(pickle.dumps(weights))
    assert again == weights and again is not weights
    assert again.data == weights.data
    assert_same_state(again.state_dict(), tiny_state)


def test_weights_unpickling_revalidates_the_bytes(weights):
    blob = pickle.dumps(weights)
    n = int.from_bytes(weights.data[:8], "little")
    header = weights.data[8 : 8 + n]
    tampered = blob.replace(header, header.replace(CONFIG_KEY.encode(), b"something_else_"))
    assert tampered != blob
    with pytest.raises(WeightsError, match="codafeat_config"):
        pickle.loads(tampered)


def test_weights_copies_and_clone_share_the_object(weights):
    assert copy.deepcopy(weights) is weights
    assert copy.copy(weights) is weights
    enc = CodaEncoder(weights=weights)
    assert clone(enc).weights is weights
    assert copy.deepcopy({"w": [weights]})["w"][0] is weights


def test_weights_equality_and_hash(weights, tiny_state):
    same = Weights(bytes(weights.data))
    assert same == weights and hash(same) == hash(weights)
    other = Weights.from_state(tiny_state, tiny_config(image_size=48))
    assert other != weights
    assert weights != weights.data  # not equal to its bytes
    assert len({weights, same, other}) == 2


def test_weights_repr(weights):
    text = repr(weights)
    assert text.startswith("Weights(backbone='test_convnext', image_size=32, embed_dim=64")
    assert "MB" in text and "epochs=7" in text
    assert "epochs" not in repr(Weights.from_state({"w": torch.ones(1)}, tiny_config()))


def test_weights_are_immutable(weights):
    with pytest.raises(AttributeError, match="immutable"):
        weights._data = b""
    with pytest.raises(AttributeError):
        weights.data = b""
    cfg = weights.config
    cfg["backbone"] = "changed"
    cfg["mean"].append(1.0)
    assert weights.config == tiny_config(training={"epochs": 7})
    sd = weights.state_dict()
    next(iter(sd.values())).add_(1.0)
    assert_same_state(weights.state_dict(), Weights(weights.data).state_dict())


def test_weights_reject_bad_input():
    with pytest.raises(TypeError, match="bytes"):
        Weights("not bytes")
    with pytest.raises(WeightsError, match="<memory>"):
        Weights(b"\x00" * 16)


def test_weights_save_and_from_file(weights, tmp_path):
    path = weights.save(tmp_path / "w.safetensors")
    loaded = Weights.from_file(path)
    assert loaded == weights
    assert loaded.source == str(path)
    assert read_config(path) == weights.config


def test_weights_load_into_encoder_like_the_file(weights, tmp_path, images):
    path = weights.save(tmp_path / "w.safetensors")
    a = CodaEncoder(weights=weights).fit().transform(images)
    b = CodaEncoder(weights=path).fit().transform(images)
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- properties
_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]


@st.composite
def tensors(draw) -> torch.Tensor:
    dtype = draw(st.sampled_from(_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = bytearray(draw(st.binary(min_size=n * itemsize, max_size=n * itemsize)))
    if dtype == torch.bool:
        raw = bytearray(b % 2 for b in raw)
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).reshape(shape).clone()  # any bit pattern, NaNs included


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@st.composite
def configs(draw) -> dict:
    in_chans = draw(st.integers(1, 4))
    finite = st.floats(-1e6, 1e6, allow_nan=False)
    return make_config(
        backbone=draw(st.text(min_size=1, max_size=20)),
        embed_dim=draw(st.integers(1, 4096)),
        image_size=draw(st.integers(1, 2048)),
        in_chans=in_chans,
        mean=draw(st.lists(finite, min_size=in_chans, max_size=in_chans)),
        std=draw(st.lists(st.floats(1e-6, 1e6), min_size=in_chans, max_size=in_chans)),
        pooling=draw(st.sampled_from(["avg", "max", "avgmax"])),
        training=draw(st.dictionaries(st.text(max_size=8), _json, max_size=4)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.dictionaries(st.text(max_size=12), tensors(), min_size=1, max_size=5), config=configs())
def test_round_trip_property(state, config):
    # NaN / inf are refused at load (test_bad_inputs); any finite bit pattern round-trips
    state = {k: torch.nan_to_num(v) if v.is_floating_point() else v for k, v in state.items()}
    data = weights_to_bytes(state, config)
    out, cfg = weights_from_bytes(data)
    assert_same_state(out, state)
    assert cfg == config
    w = Weights(data)
    assert w.config == config and pickle.loads(pickle.dumps(w)) == w
    with tempfile.TemporaryDirectory() as d:
        path = save_weights(Path(d) / "w.safetensors", state, config)
        assert path.read_bytes() == data  # deterministic serialisation
        out2, cfg2 = load_weights(path)
        assert_same_state(out2, state)
        assert cfg2 == config == read_config(path)


def test_a_config_nested_too_deeply_is_named_not_a_recursion_error(tmp_path):
    """Issue 19, item 13: a hostile config JSON ends in a WeightsError naming the file."""
    import torch
    from safetensors.torch import save_file

    from codafeat.formats.weights import CONFIG_KEY, WeightsError, load_weights

    path = tmp_path / "deep.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(WeightsError, match="deep.safetensors.*nested too deeply"):
        load_weights(path)
