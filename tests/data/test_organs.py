"""Organ labels (codafeat/data/organs.py), and the persistent DICOM tag index (data/tag_index.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_io import write_dicom

import codafeat.data.organs as organs_mod
from codafeat.data.organs import collect_organ_images
from codafeat.data.tag_index import INDEX_NAME


def _dicom(path, part):
    return str(write_dicom(path, np.zeros((2, 2), np.uint8), BodyPartExamined=part))


def test_dicom_tags_are_read_once_across_runs(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", part) for i, part in enumerate(["CHEST", "HAND", "CHEST"])]
    reads = []
    real = organs_mod.dicom_body_part
    monkeypatch.setattr(organs_mod, "dicom_body_part", lambda p: reads.append(p) or real(p))
    cache = tmp_path / "cache"
    items, organs, skipped = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(organs) == ["chest", "hand", "chest"] and skipped == [] and len(reads) == 3
    assert (cache / INDEX_NAME).is_file()
    reads.clear()
    _, again, _ = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(again) == list(organs) and reads == [], "unchanged files: no header read"
    _dicom(tmp_path / "1.dcm", "KNEE")  # edited: another size or modification time
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, edited, _ = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(edited) == ["chest", "knee", "chest"] and reads == [files[1]]


def test_without_a_cache_dir_every_header_is_read(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", "CHEST") for i in range(2)]
    reads = []
    real = organs_mod.dicom_body_part
    monkeypatch.setattr(organs_mod, "dicom_body_part", lambda p: reads.append(p) or real(p))
    collect_organ_images(files, organ_from="dicom")
    collect_organ_images(files, organ_from="dicom")
    assert len(reads) == 4 and not any(p.name == INDEX_NAME for p in tmp_path.rglob("*"))
    assert np.asarray(collect_organ_images(files, organ_from="dicom")[1]).tolist() == ["chest", "chest"]
