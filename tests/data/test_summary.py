"""The training-data summary of the model card (codafeat/data/summary.py)."""

from __future__ import annotations

import numpy as np
import pytest

from codafeat.data.summary import MAX_DICOM_HEADERS, files_digest, training_data_summary

from helpers import write_dicom


def test_digest_is_of_the_relative_tree():
    a = files_digest(["/data/a/chest/1.png", "/data/a/hand/2.png"])
    assert a == files_digest(["/mnt/b/hand/2.png", "/mnt/b/chest/1.png"]), "order and location do not matter"
    assert a != files_digest(["/data/a/chest/1.png", "/data/a/hand/3.png"]), "a renamed file changes it"
    assert files_digest([np.zeros((2, 2))]) is None


def test_dicom_manufacturers_and_body_parts(tmp_path):
    pytest.importorskip("pydicom")
    paths = [
        str(write_dicom(tmp_path / f"{i}.dcm", np.zeros((2, 2), np.uint8), Manufacturer=maker, BodyPartExamined=part))
        for i, (maker, part) in enumerate([("ACME", "CHEST"), ("ACME", "HAND"), ("Other", "CHEST")])
    ]
    summary = training_data_summary(paths, ["chest", "hand", "chest"])
    assert summary["organs"] == {"chest": 2, "hand": 1} and summary["n_images"] == 3
    assert summary["dicom_manufacturers"] == {"ACME": 2, "Other": 1}
    assert summary["dicom_body_parts"] == {"CHEST": 2, "HAND": 1}
    assert summary["dicom_sampled"] == 3 <= MAX_DICOM_HEADERS
    assert "dicom_manufacturers" not in training_data_summary(["a/x.png"], ["chest"])


def test_dicom_sample_is_stable_and_location_free():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from codafeat.data.summary import dicom_sample

    @settings(max_examples=25, deadline=None)
    @given(n=st.integers(1, 3000), k=st.integers(1, 300), added=st.integers(0, 30))
    def check(n, k, added):
        paths = [f"/data/a/organ{i % 7}/{i}.dcm" for i in range(n)]
        sample = dicom_sample(paths, k)
        assert len(sample) == min(n, k) and len(set(sample)) == len(sample) and set(sample) <= set(paths)
        assert sample == [p for p in paths if p in set(sample)], "the sample keeps the input order"
        moved = dicom_sample([p.replace("/data/a/", "/mnt/b/") for p in paths], k)
        assert [p.replace("/data/a/", "/mnt/b/") for p in sample] == moved, "same relative tree, same sample"
        grown = dicom_sample(paths + [f"/data/a/organ0/new{j}.dcm" for j in range(added)], k)
        if n >= k:  # bottom-k: each added file displaces at most one sampled file
            assert len(set(sample) & set(grown)) >= k - added

    check()


def test_dicom_headers_are_read_once_with_a_cache_dir(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    import codafeat.data.summary as summary_mod

    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    paths = [
        str(write_dicom(data / f"{i}.dcm", np.zeros((2, 2), np.uint8), Manufacturer="ACME", BodyPartExamined="CHEST"))
        for i in range(4)
    ]
    reads = []
    real = summary_mod._read_header
    monkeypatch.setattr(summary_mod, "_read_header", lambda p: reads.append(p) or real(p))
    first = training_data_summary(paths, ["chest"] * 4, cache_dir=cache)
    assert len(reads) == 4 and first["dicom_manufacturers"] == {"ACME": 4}
    again = training_data_summary(paths, ["chest"] * 4, cache_dir=cache)
    assert len(reads) == 4, "an unchanged file's header is not read again"
    assert again == first
    import os

    write_dicom(data / "1.dcm", np.zeros((2, 2), np.uint8), Manufacturer="Other", BodyPartExamined="CHEST")
    os.utime(data / "1.dcm", ns=(1, 1))  # another modification time: another identity
    changed = training_data_summary(paths, ["chest"] * 4, cache_dir=cache)
    assert reads[4:] == [paths[1]], "only the changed file is read"
    assert changed["dicom_manufacturers"] == {"ACME": 3, "Other": 1}
    assert training_data_summary(paths, ["chest"] * 4) == changed, "the cache gives what a fresh read gives"
