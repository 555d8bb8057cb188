"""Tests for codafeat.data.cache.decoded: decode once, reuse across epochs and runs."""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import codafeat.data.io as io_mod
from codafeat.data.cache.decoded import DecodedCache, cache_size_for
from codafeat.data.io import ImageReadError, load_image

SIZE = 16


@pytest.fixture()
def images(tmp_path: Path) -> list[str]:
    """Five small files: 8-bit PNGs of several sizes, a 16-bit PNG and an RGB JPEG."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate([(40, 30), (16, 16), (25, 50)]):
        p = folder / f"gray{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(p)
        paths.append(str(p))
    p16 = folder / "deep.png"
    Image.fromarray(rng.integers(0, 4096, (30, 30)).astype(np.uint16)).save(p16)
    paths.append(str(p16))
    prgb = folder / "colour.jpg"
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), mode="RGB").save(prgb)
    paths.append(str(prgb))
    return paths


def expected(item) -> np.ndarray:
    """Independent reference: load_image resized, scaled to 0..255 and rounded."""
    return np.rint(load_image(item, size=SIZE).astype(np.float64) * 255).astype(np.uint8)


class CountingLoad:
    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self._orig = io_mod.decode_image
        monkeypatch.setattr(io_mod, "decode_image", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash while decoding")
        return self._orig(*args, **kwargs)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_size_for():
    assert cache_size_for(224) == 256
    assert cache_size_for(64) == 73
    with pytest.raises(ValueError, match="image_size"):
        cache_size_for(0)


def test_memmap_content_equals_load_image_resized(images, tmp_path):
    cache = DecodedCache.build(images, SIZE, cache_dir=tmp_path / "cache")
    assert len(cache) == len(images)
    assert isinstance(cache[0], np.memmap), "read from the shard files, not copied into memory"
    assert cache.path is not None and cache.path.name == f"decoded-{cache.key}.json"
    shards = sorted((tmp_path / "cache").glob("shard-*.u8"))
    assert sum(p.stat().st_size for p in shards) == len(images) * SIZE * SIZE
    for i, p in enumerate(images):
        assert cache[i].shape == (SIZE, SIZE) and cache[i].dtype == np.uint8
        np.testing.assert_array_equal(cache[i], expected(p))
    np.testing.assert_array_equal(cache.kept, np.arange(len(images)))
    assert cache.skipped == []


def test_in_memory_equals_file_backed(images, tmp_path):
    mem = DecodedCache.build(images, SIZE)
    disk = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    assert mem.path is None and not isinstance(mem.array, np.memmap)
    np.testing.assert_array_equal(mem.array, disk.array)


def test_second_build_reuses_without_decoding(images, tmp_path, monkeypatch):
    counter = CountingLoad(monkeypatch)
    first = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    assert counter.calls == len(images)
    second = DecodedCache.build(list(images), SIZE, cache_dir=tmp_path)
    assert counter.calls == len(images)  # nothing decoded
    assert second.key == first.key and second.path == first.path
    np.testing.assert_array_equal(first.array, second.array)
    # relative paths to the same files give the same key
    monkeypatch.chdir(Path(images[0]).parent)
    assert DecodedCache.cache_key([os.path.basename(p) for p in images], SIZE) == first.key
    # open() by key is the same cache
    np.testing.assert_array_equal(DecodedCache.open(tmp_path, first.key).array, first.array)


def test_changed_file_list_or_size_rebuilds(images, tmp_path, monkeypatch):
    first = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    counter = CountingLoad(monkeypatch)
    # rewrite one file with other pixels (and a different modification time)
    new = np.full((40, 30), 200, dtype=np.uint8)
    Image.fromarray(new, mode="L").save(images[0])
    st = os.stat(images[0])
    os.utime(images[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    assert counter.calls == 1, "only the changed file is decoded; the others are copied from the old shard"
    assert second.key != first.key
    np.testing.assert_array_equal(second[0], np.full((SIZE, SIZE), 200, np.uint8))
    # the old cache is still intact and openable under its own key
    np.testing.assert_array_equal(DecodedCache.open(tmp_path, first.key)[1], second[1])
    # a different list and a different size are different caches
    assert DecodedCache.cache_key(images[:-1], SIZE) != second.key
    assert DecodedCache.cache_key(images, SIZE + 1) != second.key
    assert DecodedCache.cache_key(images[::-1], SIZE) != second.key
    # a new modification time alone (same bytes) is a change too
    st = os.stat(images[1])
    os.utime(images[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert DecodedCache.cache_key(images, SIZE) != second.key


def test_crash_mid_build_loses_at_most_the_shard_in_flight(images, tmp_path, monkeypatch):
    import codafeat.data.cache.shards as shards_mod

    monkeypatch.setattr(shards_mod, "MAX_SHARD", 2)  # 5 images -> shards of 2, 2, 1
    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 10**9)
    cache_dir = tmp_path / "cache"
    counter = CountingLoad(monkeypatch, fail_at=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    assert counter.calls == 3
    # the first shard is complete; the one in flight left nothing, not even a temporary file
    assert [p.suffix for p in sorted(cache_dir.iterdir())] == [".json", ".u8"]
    assert all(p.name.startswith("shard-") for p in cache_dir.iterdir())
    with pytest.raises(FileNotFoundError):
        DecodedCache.open(cache_dir, DecodedCache.cache_key(images, SIZE))
    # the next build decodes only the 3 images of the missing shards
    counter.fail_at, counter.calls = None, 0
    cache = DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    assert counter.calls == 3 and len(cache) == len(images)
    for i, p in enumerate(images):
        np.testing.assert_array_equal(cache[i], expected(p))
    assert len(list(cache_dir.glob("shard-*.u8"))) == 3 and (cache_dir / f"decoded-{cache.key}.json").is_file()


def test_truncated_data_file_is_rebuilt(images, tmp_path, caplog):
    cache = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    shard = sorted(tmp_path.glob("shard-*.u8"))[0]
    with open(shard, "r+b") as fh:  # one byte short: a truncation whatever the shard's size (the layout
        fh.truncate(shard.stat().st_size - 1)  # depends on the paths, so a shard may hold a single image)
    with pytest.raises(ValueError, match="bytes"):
        DecodedCache.open(tmp_path, cache.key)
    with caplog.at_level(logging.WARNING):
        again = DecodedCache.build(images, SIZE, cache_dir=tmp_path)
    assert "rebuilding" in caplog.text
    assert len(again) == len(images)
    np.testing.assert_array_equal(again[4], expected(images[4]))


def test_on_error_skip_excludes_counts_and_reports(images, tmp_path, caplog):
    bad = Path(images[0]).parent / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    items = images[:2] + [str(bad)] + images[2:]
    cache_dir = tmp_path / "cache"
    with pytest.raises(ImageReadError, match="broken.png"):
        DecodedCache.build(items, SIZE, cache_dir=cache_dir)
    assert files_in(cache_dir) == []
    with caplog.at_level(logging.WARNING):
        cache = DecodedCache.build(items, SIZE, cache_dir=cache_dir, on_error="skip")
    assert "skipped 1 unreadable" in caplog.text and "broken.png" in caplog.text
    assert cache.skipped == [str(bad)]
    assert len(cache) == len(items) - 1
    np.testing.assert_array_equal(cache.kept, [0, 1, 3, 4, 5])
    for j, i in enumerate(cache.kept):
        np.testing.assert_array_equal(cache[j], expected(items[i]))
    # reused: the skip is reported again, and on_error="raise" still refuses it
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = DecodedCache.build(items, SIZE, cache_dir=cache_dir, on_error="skip")
    assert "broken.png" in caplog.text and again.skipped == [str(bad)]
    with pytest.raises(ImageReadError, match="broken.png"):
        DecodedCache.build(items, SIZE, cache_dir=cache_dir)
    # in memory too
    mem = DecodedCache.build(items, SIZE, on_error="skip")
    np.testing.assert_array_equal(mem.kept, cache.kept)
    np.testing.assert_array_equal(mem.array, cache.array)


def test_all_unreadable_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="none of the 1 images"):
        DecodedCache.build([str(tmp_path / "missing.png")], SIZE, cache_dir=tmp_path, on_error="skip")
    assert files_in(tmp_path) == []


def test_arrays_and_pil_images(tmp_path):
    rng = np.random.default_rng(1)
    items = [
        rng.integers(0, 256, (20, 30), dtype=np.uint8),
        rng.random((12, 12)).astype(np.float32),
        rng.integers(0, 65535, (10, 14)).astype(np.uint16),
        Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8), mode="L"),
    ]
    cache = DecodedCache.build(items, SIZE, cache_dir=tmp_path)
    for i, item in enumerate(items):
        np.testing.assert_array_equal(cache[i], expected(item))
    # array content is part of the key
    changed = [items[0].copy()] + items[1:]
    changed[0][0, 0] ^= 1
    assert DecodedCache.cache_key(changed, SIZE) != cache.key


def test_parallel_decoding_matches_serial(images):
    serial = DecodedCache.build(images, SIZE)
    parallel = DecodedCache.build(images, SIZE, num_workers=2)
    np.testing.assert_array_equal(serial.array, parallel.array)


def test_pickle_file_backed_cache_travels_as_a_path(images, tmp_path):
    cache = DecodedCache.build(images * 20, SIZE, cache_dir=tmp_path)
    blob = pickle.dumps(cache)
    assert len(blob) < cache.array.nbytes / 2
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.array, cache.array)
    np.testing.assert_array_equal(back.kept, cache.kept)
    mem = pickle.loads(pickle.dumps(DecodedCache.build(images, SIZE)))
    assert len(mem) == len(images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cache_size=0), "cache_size"),
        (dict(on_error="ignore"), "on_error"),
        (dict(num_workers=-1), "num_workers"),
    ],
)
def test_bad_parameters(images, kwargs, match):
    args = dict(cache_size=SIZE) | kwargs
    size = args.pop("cache_size")
    with pytest.raises(ValueError, match=match):
        DecodedCache.build(images, size, **args)


def test_empty_items():
    with pytest.raises(ValueError, match="empty"):
        DecodedCache.build([], SIZE)


def test_open_rejects_foreign_index(tmp_path):
    (tmp_path / "decoded-abc.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a codafeat"):
        DecodedCache.open(tmp_path, "abc")


def test_adding_files_rebuilds_only_the_shards_they_fall_into(tmp_path, monkeypatch):
    import codafeat.data.cache.shards as shards_mod

    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 8)  # ~8 images per shard
    monkeypatch.setattr(shards_mod, "MAX_SHARD", 64)
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(120):
        paths.append(str(folder / f"{i:04d}.png"))
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(paths[-1])
    cache_dir = tmp_path / "cache"
    first = DecodedCache.build(paths, SIZE, cache_dir=cache_dir)
    n_shards = len(list(cache_dir.glob("shard-*.u8")))
    assert n_shards >= 5
    counter = CountingLoad(monkeypatch)
    assert len(DecodedCache.build(paths, SIZE, cache_dir=cache_dir)) == 120 and counter.calls == 0
    extra = str(folder / "0050a.png")  # sorts into the middle
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(extra)
    grown = sorted(paths + [extra])
    again = DecodedCache.build(grown, SIZE, cache_dir=cache_dir)
    assert counter.calls == 1, f"one new file decoded {counter.calls} images: the rest are copied from the old shard"
    assert len(again) == 121 and again.key != first.key
    for i, p in enumerate(grown):
        np.testing.assert_array_equal(again[i], expected(p))
    # the replaced shard is gone from disk, the others are shared
    assert len(list(cache_dir.glob("shard-*.u8"))) <= n_shards + 2


_KILL_CHILD = """
import sys, time
from pathlib import Path
import codafeat.data.io as io_mod
import codafeat.data.cache.shards as shards_mod
from codafeat.data.cache.decoded import DecodedCache
shards_mod.TARGET_SHARD, shards_mod.MAX_SHARD = 10**9, 2
real, calls = io_mod.decode_image, [0]
def slow(*a, **k):
    calls[0] += 1
    if calls[0] == 5:  # shards of 2: the first two are complete, the third is in flight
        Path(sys.argv[2]).write_text("paused")
        time.sleep(600)
    return real(*a, **k)
io_mod.decode_image = slow
DecodedCache.build(sys.argv[3:], 16, cache_dir=sys.argv[1])
"""


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_kill_9_mid_build_keeps_complete_shards_only(images, tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    import codafeat.data.cache.shards as shards_mod

    cache_dir, marker = tmp_path / "cache", tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(cache_dir), str(marker), *images],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the child never reached the pause"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    names = sorted(p.name for p in cache_dir.iterdir())
    assert len([n for n in names if n.startswith("shard-") and n.endswith(".json")]) == 2, names  # no set index
    assert len([n for n in names if n.endswith(".u8")]) == 2, names
    assert not any(n.startswith("decoded-") for n in names)
    # an interrupted temporary file of the third shard may remain; the next build ignores it and
    # decodes only what is missing
    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 10**9)
    monkeypatch.setattr(shards_mod, "MAX_SHARD", 2)
    counter = CountingLoad(monkeypatch)
    cache = DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    assert counter.calls == len(images) - 4 and len(cache) == len(images)
    for i, p in enumerate(images):
        np.testing.assert_array_equal(cache[i], expected(p))


def test_background_fill_serves_the_same_bytes_before_and_after(images, tmp_path, monkeypatch):
    import codafeat.data.cache.shards as shards_mod

    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 10**9)
    monkeypatch.setattr(shards_mod, "MAX_SHARD", 2)
    cache_dir = tmp_path / "cache"
    lazy = DecodedCache.build(images, SIZE, cache_dir=cache_dir, wait=False)
    assert len(lazy) == len(images) and lazy.kept.tolist() == list(range(len(images)))
    early = [np.array(lazy[i]) for i in range(len(images))]  # decoded on access, or from shards already written
    for i, p in enumerate(images):
        np.testing.assert_array_equal(early[i], expected(p))
    lazy.finish()
    assert (cache_dir / f"decoded-{lazy.key}.json").is_file() and not list(cache_dir.glob(".fill-*"))
    assert sum(lazy.kinds.values()) == len(images)
    for i in range(len(images)):
        assert isinstance(lazy[i], np.memmap)
        np.testing.assert_array_equal(lazy[i], early[i])
    counter = CountingLoad(monkeypatch)
    again = DecodedCache.build(images, SIZE, cache_dir=cache_dir, wait=False)
    assert counter.calls == 0 and again.finish() is again  # complete: nothing in the background


def test_background_fill_is_only_for_paths_that_must_all_be_read(images, tmp_path):
    arrays = [np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8)]
    cache = DecodedCache.build(arrays, SIZE, cache_dir=tmp_path / "a", wait=False)  # arrays: waits
    assert (tmp_path / "a" / f"decoded-{cache.key}.json").is_file()
    skip = DecodedCache.build(images, SIZE, cache_dir=tmp_path / "b", wait=False, on_error="skip")
    assert (tmp_path / "b" / f"decoded-{skip.key}.json").is_file(), "skip needs every file read before training"


def test_background_fill_reports_an_unreadable_file(images, tmp_path):
    bad = Path(images[0]).parent / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    cache = DecodedCache.build(images + [str(bad)], SIZE, cache_dir=tmp_path / "c", wait=False)
    with pytest.raises(ImageReadError, match="broken.png"):
        cache[len(images)]
    with pytest.raises(RuntimeError, match="broken.png"):
        cache.finish()


def _grown_folder(tmp_path, monkeypatch, n=60):
    """``n`` small PNGs in shards of ~8, and one more file that sorts into the middle."""
    import codafeat.data.cache.shards as shards_mod

    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 8)
    monkeypatch.setattr(shards_mod, "MAX_SHARD", 64)
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n + 1):
        paths.append(str(folder / (f"{i:04d}.png" if i < n else f"{n // 2:04d}a.png")))
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(paths[-1])
    return sorted(paths[:n]), sorted(paths)


def test_a_rebuilt_shard_copies_only_from_matching_donors(tmp_path, monkeypatch):
    old, grown = _grown_folder(tmp_path, monkeypatch)
    cache_dir = tmp_path / "cache"
    DecodedCache.build(old, SIZE, cache_dir=cache_dir)
    counter = CountingLoad(monkeypatch)
    # another intensity rule: the old shards hold other bytes, nothing may be copied
    deep = DecodedCache.build(grown, SIZE, cache_dir=cache_dir, bit_depth=12)
    assert counter.calls == len(grown)
    # another size: likewise
    counter.calls = 0
    DecodedCache.build(grown, SIZE + 1, cache_dir=cache_dir)
    assert counter.calls == len(grown)
    for i, p in enumerate(grown):
        np.testing.assert_array_equal(deep[i], np.rint(load_image(p, size=SIZE, bit_depth=12) * 255).astype(np.uint8))


def test_a_damaged_donor_is_decoded_instead(tmp_path, monkeypatch):
    old, grown = _grown_folder(tmp_path, monkeypatch)
    cache_dir = tmp_path / "cache"
    DecodedCache.build(old, SIZE, cache_dir=cache_dir)
    for data in cache_dir.glob("shard-*.u8"):  # every old shard loses its last byte
        with open(data, "r+b") as fh:
            fh.truncate(data.stat().st_size - 1)
    counter = CountingLoad(monkeypatch)
    again = DecodedCache.build(grown, SIZE, cache_dir=cache_dir, on_error="skip")
    assert counter.calls >= 2, "the donor's shard is inconsistent: its images are decoded, not copied"
    for i, p in enumerate(grown):
        np.testing.assert_array_equal(again[i], expected(p))


def test_background_fill_copies_from_replaced_shards(tmp_path, monkeypatch):
    import json

    old, grown = _grown_folder(tmp_path, monkeypatch)
    cache_dir = tmp_path / "cache"
    DecodedCache.build(old, SIZE, cache_dir=cache_dir)
    before = {p.name for p in cache_dir.glob("shard-*.json")}
    lazy = DecodedCache.build(grown, SIZE, cache_dir=cache_dir, wait=False).finish()
    new = [json.loads(p.read_text()) for p in cache_dir.glob("shard-*.json") if p.name not in before]
    assert len(new) >= 1 and sum(m["n_items"] - m["copied"] for m in new) == 1, "only the new file is decoded"
    for i, p in enumerate(grown):
        np.testing.assert_array_equal(lazy[i], expected(p))


def _dying_fill(monkeypatch):
    """The background fill replaced by a process that is SIGKILLed at once (as the OOM killer would)."""
    import subprocess

    def fill(*args, **kwargs):
        return subprocess.Popen(
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    import codafeat.data.cache.background_fill as fill_mod

    monkeypatch.setattr(fill_mod, "fill_in_background", fill)


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_a_killed_fill_is_a_warning_with_its_reason_and_the_cache_still_serves(images, tmp_path, monkeypatch):
    _dying_fill(monkeypatch)
    cache = DecodedCache.build(images, SIZE, cache_dir=tmp_path / "c", wait=False)
    with pytest.raises(RuntimeError, match="SIGKILL"):
        DecodedCache.build(images, SIZE, cache_dir=tmp_path / "d", wait=False).finish()
    with pytest.warns(RuntimeWarning, match="killed by SIGKILL"):
        cache.finish(on_failure="warn")
    ref = DecodedCache.build(images, SIZE)  # in memory, no fill
    assert all(np.array_equal(cache[i], ref[i]) for i in range(len(images)))
    assert cache.kinds == ref.kinds  # the kinds of the images the fill never wrote, read from the files


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_pretraining_keeps_its_model_when_the_fill_process_dies(tmp_path, monkeypatch):
    from codafeat.pretrain import CodaPretrainer

    from helpers import TINY_PRETRAIN as TINY
    from helpers import make_organ_folder

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=3)
    _dying_fill(monkeypatch)
    with pytest.warns(RuntimeWarning, match="filling the decoded cache .* failed: the process was killed by SIGKILL"):
        pre = CodaPretrainer(**dict(TINY, epochs=1, cache_dir=tmp_path / "cache")).fit(folder)
    assert len(pre.history_) == 1 and pre.intensity_["kinds"] == {"8bit": 16}
    pre.save(tmp_path / "m.safetensors")


_SLOW_INDEX_CHILD = """
import sys, time
from pathlib import Path
import codafeat.data.cache.shards as shards_mod
from codafeat.data.cache.decoded import DecodedCache
cache_dir, marker = Path(sys.argv[1]), Path(sys.argv[2])
real = shards_mod.write_set_index
def slow(*a, **k):  # every shard written, none indexed yet: the window a neighbour's cleanup hit
    (cache_dir / "b-wrote-its-shards").write_text("1")
    while not marker.exists():
        time.sleep(0.05)
    return real(*a, **k)
shards_mod.write_set_index = slow
cache = DecodedCache.build(sys.argv[3:], 16, cache_dir=cache_dir)
print(len(cache), int(sum(int(cache[i].sum()) for i in range(len(cache)))))
"""


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_a_neighbours_cleanup_keeps_the_shards_a_live_run_has_not_indexed_yet(images, tmp_path):
    import subprocess
    import time

    cache_dir, marker = tmp_path / "shared", tmp_path / "go-on"
    other = tmp_path / "other"
    other.mkdir()
    theirs = []
    for i in range(4):
        theirs.append(str(other / f"o{i}.png"))
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(theirs[-1])
    (other / "broken.png").write_bytes(b"not an image")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_INDEX_CHILD, str(cache_dir), str(marker), *images],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not (cache_dir / "b-wrote-its-shards").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "run B never wrote its shards"
        time.sleep(0.05)
    b_shards = sorted(p.name for p in cache_dir.glob("shard-*"))
    # run A: other images, a foreground build with a skipped file, then its cleanup
    a = DecodedCache.build(theirs + [str(other / "broken.png")], SIZE, cache_dir=cache_dir, on_error="skip")
    assert len(a) == 4
    assert set(b_shards) <= {p.name for p in cache_dir.glob("shard-*")}, "A's cleanup removed B's shards"
    marker.write_text("go")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    ref = DecodedCache.build(images, SIZE)
    assert out.decode().split() == [str(len(images)), str(int(sum(int(ref[i].sum()) for i in range(len(images)))))]
    assert not list(cache_dir.glob(".lease-*.json")), "B released its lease"


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_a_stale_lease_protects_nothing_and_is_removed(images, tmp_path, monkeypatch):
    import json
    import subprocess

    from codafeat.data.cache import leases, shards

    monkeypatch.setattr(shards, "TARGET_SHARD", 10**9)
    monkeypatch.setattr(shards, "MAX_SHARD", 2)  # three shards
    cache_dir = tmp_path / "c"
    DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    index = next(cache_dir.glob("decoded-*.json"))
    keys = [s[2] for s in json.loads(index.read_text())["shards"]]
    index.unlink()  # the shards are now unindexed
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache_dir / ".lease-dead.json"
    stale.write_text(json.dumps({"pid": int(dead.stdout), "host": leases.holder()["host"], "shards": keys}))
    with leases.lease(cache_dir, keys[:1]):  # this live process holds the first shard
        removed = shards.remove_unreferenced(cache_dir)
    assert len(keys) == 3 and not stale.exists()
    left = {p.name for p in cache_dir.glob("shard-*")}
    assert left == {f"shard-{keys[0]}.u8", f"shard-{keys[0]}.json"}
    assert len(removed) == 4


@pytest.mark.parametrize("damage", [{"skipped": [[0, "x"]]}, {"kept": "all"}, {"kinds": [1]}, {"cache_size": None}])
def test_damaged_shard_metadata_is_rebuilt_not_used_forever(images, tmp_path, damage):
    import json

    cache_dir = tmp_path / "c"
    DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    meta_path = next(cache_dir.glob("shard-*.json"))
    meta = json.loads(meta_path.read_text())
    meta.update(damage)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="damaged"):
        DecodedCache.open(cache_dir, DecodedCache.cache_key(images, SIZE))
    cache = DecodedCache.build(images, SIZE, cache_dir=cache_dir)  # rebuilt
    assert [np.array_equal(cache[i], expected(p)) for i, p in enumerate(images)] == [True] * len(images)
    DecodedCache.open(cache_dir, DecodedCache.cache_key(images, SIZE))  # and healthy from now on


def test_stale_temporaries_of_killed_shard_writes_are_removed_unless_leased(images, tmp_path):
    """Issue 19, item 11: a killed fill's ``.shard-*.u8.<hex>.tmp`` files do not pile up."""
    from codafeat.data.cache import leases

    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    stale = cache_dir / ".shard-deadbeef.u8.0123456789ab.tmp"
    live = cache_dir / ".shard-cafe.u8.0123456789ab.tmp"
    other = cache_dir / ".notes.txt.0123456789ab.tmp"  # not ours: never touched
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    with leases.lease(cache_dir, ["cafe"]):  # a live run is writing shard cafe
        DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    assert not stale.exists() and live.exists() and other.exists()


def test_flipped_shard_bytes_and_a_reordered_index_are_caught_and_rebuilt(images, tmp_path, monkeypatch):
    """Issue 19, item 7: a shard's bytes carry a checksum; the index's order is checked against the shards."""
    import json

    import codafeat.data.cache.shards as shards_mod

    monkeypatch.setattr(shards_mod, "TARGET_SHARD", 10**9)
    monkeypatch.setattr(shards_mod, "MAX_SHARD", 2)  # three shards
    cache_dir = tmp_path / "c"
    DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    key = DecodedCache.cache_key(images, SIZE)
    data = sorted(cache_dir.glob("shard-*.u8"))[0]
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        DecodedCache.open(cache_dir, key)
    cache = DecodedCache.build(images, SIZE, cache_dir=cache_dir)  # the damaged shard is written again
    assert all(np.array_equal(cache[i], expected(p)) for i, p in enumerate(images))
    index = next(cache_dir.glob("decoded-*.json"))
    meta = json.loads(index.read_text())
    shards = meta["shards"]
    meta["shards"] = [[lo, hi, s[2]] for (lo, hi, _), s in zip(shards, [shards[1], shards[0], *shards[2:]])]
    index.write_text(json.dumps(meta))
    from codafeat.data.cache.shards import identity_list, layout

    with pytest.raises(ValueError, match="edited index"):
        DecodedCache.open(cache_dir, key, layout=layout(identity_list(images), SIZE, None))
    cache = DecodedCache.build(images, SIZE, cache_dir=cache_dir)
    assert all(np.array_equal(cache[i], expected(p)) for i, p in enumerate(images))
