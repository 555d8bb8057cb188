"""Tests of codafeat.data.cache.embeddings: content keys, hit/miss logic, atomic writes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil

import joblib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from codafeat.data.cache import embeddings as ec
from codafeat.data.cache.embeddings import EmbeddingCache, item_key, model_key
from codafeat.data.io import ImageReadError

MK = model_key(b"some weights", image_size=64, pooling="avg", normalize=True)


def write_png(path, arr):
    Image.fromarray(arr).save(path)
    return path


# --------------------------------------------------------------------------- keys
def test_file_key_is_the_content_hash(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    a = write_png(tmp_path / "a.png", arr)
    b = tmp_path / "sub" / "copy.png"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert item_key(str(a)) == item_key(b) == item_key(os.fspath(b))
    # independent reference: the key changes exactly when the bytes change
    ka = item_key(a)
    data = a.read_bytes()
    a.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert item_key(a) != ka
    a.write_bytes(data)
    assert item_key(a) == ka
    write_png(b, arr[::-1].copy())  # modified image at the same path
    assert item_key(b) != ka


def test_missing_file_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png"):
        item_key(tmp_path / "nope.png")
    with pytest.raises(ImageReadError):
        item_key(tmp_path)  # a directory
    with pytest.raises(TypeError, match="list"):
        item_key([1, 2])


def test_array_keys_depend_on_dtype_shape_and_values():
    a = np.zeros((4, 4), np.uint8)
    assert item_key(a) == item_key(a.copy())
    assert item_key(a) == item_key(np.asfortranarray(a))  # layout is not content
    assert item_key(a) != item_key(a.astype(np.uint16))
    assert item_key(a) != item_key(a.reshape(2, 8))
    b = a.copy()
    b[1, 1] = 1
    assert item_key(a) != item_key(b)
    stack = np.stack([a, b])
    assert item_key(stack[0]) == item_key(a)  # a view of a stacked batch keys like the image


def test_pil_keys():
    arr = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert item_key(Image.fromarray(arr)) == item_key(Image.fromarray(arr.copy()))
    assert item_key(Image.fromarray(arr)) != item_key(Image.fromarray(arr).convert("RGB"))
    assert item_key(Image.fromarray(arr)) != item_key(arr)  # kinds are kept apart
    arr2 = arr.copy()
    arr2[0, 0] = 99
    assert item_key(Image.fromarray(arr)) != item_key(Image.fromarray(arr2))


def test_model_key_covers_weights_and_settings():
    base = dict(image_size=64, pooling="avg", normalize=True)
    k = model_key(b"w", **base)
    assert len(k) == 64 and k == model_key(b"w", **base)
    assert model_key(b"w2", **base) != k
    assert model_key(b"w", **dict(base, image_size=32)) != k
    assert model_key(b"w", **dict(base, pooling="max")) != k
    assert model_key(b"w", **dict(base, normalize=False)) != k
    assert model_key(b"w", **base, extra={"mean": [0.5]}) != k
    # state dicts: tensors and arrays with the same values agree, any change differs
    t = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    n = {"b": np.ones(2, np.float32), "a.weight": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
    assert model_key(t, **base) == model_key(n, **base)
    t2 = dict(t, b=torch.tensor([1.0, 1.5]))
    assert model_key(t2, **base) != model_key(t, **base)
    assert model_key({"a": torch.ones(2, dtype=torch.bfloat16)}, **base)  # bf16 works
    with pytest.raises(TypeError, match="weights"):
        model_key(3, **base)


def test_model_key_accepts_codafeat_weights():
    from codafeat import CodaEncoder

    w = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit().get_weights()
    base = dict(image_size=32, pooling="avg", normalize=True)
    assert model_key(w, **base) == model_key(w.data, **base)


# --------------------------------------------------------------------------- store / lookup
def test_hits_and_misses(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    keys = [item_key(np.full((2, 2), i, np.uint8)) for i in range(4)]
    emb, missing = cache.lookup(MK, keys)
    assert emb.shape == (4, 0) and missing.tolist() == [0, 1, 2, 3]
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache.store(MK, [keys[1], keys[3]], rows) == 2
    emb, missing = cache.lookup(MK, keys)
    assert missing.tolist() == [0, 2]
    assert emb.dtype == np.float32 and emb.shape == (4, 3)
    np.testing.assert_array_equal(emb[[1, 3]], rows)
    assert np.isnan(emb[[0, 2]]).all()
    emb, missing = cache.lookup(MK, keys[:1], n_features=3)
    assert emb.shape == (1, 3) and missing.tolist() == [0]
    # layout: <root>/<model_key>/<2 chars>/<item_key>.emb
    assert (tmp_path / "cache" / MK / keys[1][:2] / f"{keys[1]}.emb").is_file()


def test_model_keys_do_not_collide(tmp_path):
    cache = EmbeddingCache(tmp_path)
    other = model_key(b"other weights", image_size=64, pooling="avg", normalize=True)
    key = item_key(np.zeros(3))
    cache.store(MK, [key], np.array([[1.0, 1.0]]))
    cache.store(other, [key], np.array([[2.0, 2.0]]))
    assert cache.lookup(MK, [key])[0].tolist() == [[1.0, 1.0]]
    assert cache.lookup(other, [key])[0].tolist() == [[2.0, 2.0]]
    cache.clear(other)
    assert cache.lookup(other, [key])[1].tolist() == [0]
    assert cache.lookup(MK, [key])[1].tolist() == []
    cache.clear()
    assert cache.lookup(MK, [key])[1].tolist() == [0]


def test_same_content_at_two_paths_hits(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    arr = np.random.RandomState(0).randint(0, 255, (8, 8)).astype(np.uint8)
    a = write_png(tmp_path / "a.png", arr)
    b = tmp_path / "b.png"
    shutil.copy(a, b)
    cache.store(MK, [item_key(a)], np.ones((1, 4)))
    emb, missing = cache.lookup(MK, [item_key(b)])
    assert missing.size == 0 and emb.tolist() == [[1.0] * 4]
    write_png(b, 255 - arr)
    assert cache.lookup(MK, [item_key(b)])[1].tolist() == [0]


def test_non_finite_rows_are_not_stored(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = [item_key(np.zeros(1)), item_key(np.ones(1))]
    assert cache.store(MK, keys, np.array([[np.nan, 1.0], [1.0, 2.0]])) == 1
    assert cache.lookup(MK, keys)[1].tolist() == [0]
    with pytest.raises(ValueError, match="shape"):
        cache.store(MK, keys, np.ones((3, 2)))


def test_bad_keys_are_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="item_key"):
        cache.store(MK, ["../../etc"], np.ones((1, 2)))
    with pytest.raises(ValueError, match="model_key"):
        cache.lookup("not a key", [item_key(np.zeros(1))])


def test_corrupt_or_mismatched_entries_are_misses(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    keys = [item_key(np.full(1, i)) for i in range(3)]
    cache.store(MK, keys, np.ones((3, 4)))
    cache.path(MK, keys[0]).write_bytes(ec.entry_bytes(b"\x93NUMPY garbage"))
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    cache.path(MK, keys[1]).write_bytes(ec.entry_bytes(pickled.getvalue()))  # valid checksum, never unpickled
    with caplog.at_level("WARNING"):
        emb, missing = cache.lookup(MK, keys)
    assert missing.tolist() == [0, 1]
    assert emb[2].tolist() == [1.0] * 4
    assert "treated as a miss" in caplog.text
    # an entry of another width is a miss too
    cache.store(MK, keys[1:2], np.ones((1, 7), np.float32))
    assert cache.lookup(MK, keys, n_features=4)[1].tolist() == [0, 1]


def test_a_flipped_byte_is_detected_and_the_entry_recomputed(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    key = item_key(np.zeros(3))
    cache.store(MK, [key], np.arange(4, dtype=np.float32)[None])
    path = cache.path(MK, key)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the float payload: still a valid .npy, wrong numbers
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        emb, missing = cache.lookup(MK, [key])
    assert missing.tolist() == [0] and "checksum" in caplog.text
    cache.store(MK, [key], np.arange(4, dtype=np.float32)[None])  # recomputed and rewritten
    assert cache.lookup(MK, [key])[0].tolist() == [[0.0, 1.0, 2.0, 3.0]]
    # an entry of codafeat 0.1 (a bare .npy) is not read
    np.save(path.with_suffix(".npy"), np.ones(4, np.float32))
    path.unlink()
    assert cache.lookup(MK, [key])[1].tolist() == [0]


def test_writes_are_atomic(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    key = item_key(np.zeros(2))
    cache.store(MK, [key], np.ones((1, 3)))
    target = cache.path(MK, key)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ec.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.store(MK, [key], np.full((1, 3), 5.0))
    # the old entry is intact and no temporary file is left behind
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_joblib_memory_location(tmp_path):
    mem = joblib.Memory(tmp_path / "jl", verbose=0)
    cache = EmbeddingCache(mem)
    key = item_key(np.zeros(2))
    cache.store(MK, [key], np.ones((1, 2)))
    assert (tmp_path / "jl" / ec.JOBLIB_SUBDIR / MK).is_dir()
    assert cache.lookup(MK, [key])[1].size == 0
    off = EmbeddingCache(joblib.Memory(None))
    assert not off.enabled
    assert off.store(MK, [key], np.ones((1, 2))) == 0
    assert off.lookup(MK, [key])[1].tolist() == [0]
    with pytest.raises(TypeError, match="joblib.Memory"):
        EmbeddingCache(42)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        EmbeddingCache(tmp_path / "file")


@settings(max_examples=25, deadline=None)
@given(
    rows=arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 8)), elements=st.floats(-1e6, 1e6, width=32))
)
def test_round_trip_is_exact(tmp_path_factory, rows):
    cache = EmbeddingCache(tmp_path_factory.mktemp("rt"))
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(rows))]
    cache.store(MK, keys, rows)
    emb, missing = cache.lookup(MK, keys)
    assert missing.size == 0
    np.testing.assert_array_equal(emb, rows)
