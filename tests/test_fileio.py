"""codafeat._fileio: atomic writes, sets of files, pre-flight checks, stale temporaries."""

from __future__ import annotations

import os
import stat

import pytest

from codafeat import _fileio
from codafeat._fileio import (
    atomic_write_bytes,
    atomic_write_many,
    check_writable,
    remove_stale_temps,
)


def test_atomic_write_has_normal_permissions_and_leaves_no_temp(tmp_path):
    p = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x")
    assert p.read_bytes() == b"x"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [q.name for q in p.parent.iterdir()] == ["a.bin"]


def test_a_set_is_all_or_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.npy", tmp_path / "a.paths.txt"
    atomic_write_many({a: b"old a", b: b"old b"})
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file of the set
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(_fileio.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write_many({a: b"new a", b: b"new b"})
    monkeypatch.undo()
    assert (a.read_bytes(), b.read_bytes()) == (b"old a", b"old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.paths.txt"]


def test_check_writable_fails_early_naming_what(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match="--out"):
        check_writable(tmp_path / "afile" / "m.safetensors", what="--out")
    with pytest.raises(NotADirectoryError, match="checkpoint_dir"):
        check_writable(tmp_path / "afile", what="checkpoint_dir", is_dir=True)
    with pytest.raises(IsADirectoryError, match="--out"):
        check_writable(tmp_path, what="--out")
    with pytest.raises(OSError, match="MiB needed"):
        check_writable(tmp_path, what="checkpoint_dir", is_dir=True, need_bytes=2**62)
    assert check_writable(tmp_path / "new" / "dir", what="d", is_dir=True).is_dir()
    assert check_writable(tmp_path / "m.safetensors", what="--out") == tmp_path / "m.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "new"]  # probes removed


def test_only_our_stale_temporaries_are_removed(tmp_path):
    ours = tmp_path / ".w.safetensors.0123456789ab.tmp"
    others = [tmp_path / ".w.safetensors.tmp", tmp_path / ".x.safetensors.0123456789ab.tmp", tmp_path / "w.tmp"]
    for p in [ours, *others]:
        p.write_text("x")
    assert remove_stale_temps(tmp_path, "w.safetensors") == [ours]
    assert all(p.exists() for p in others)
    assert remove_stale_temps(tmp_path / "missing", "w.safetensors") == []
