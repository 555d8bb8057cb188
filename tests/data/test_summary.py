"""The training-data summary of the model card (codafeat/data/summary.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_io import write_dicom

from codafeat.data.summary import MAX_DICOM_HEADERS, files_digest, training_data_summary


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
