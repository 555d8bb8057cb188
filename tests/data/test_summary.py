"""The training-data summary of the model card (codafeat/data/summary.py)."""

from __future__ import annotations

import numpy as np
import pytest

from codafeat.data.summary import MAX_DICOM_HEADERS, files_digest, training_data_summary


def test_digest_is_of_the_relative_tree():
    a = files_digest(["/data/a/chest/1.png", "/data/a/hand/2.png"])
    assert a == files_digest(["/mnt/b/hand/2.png", "/mnt/b/chest/1.png"]), "order and location do not matter"
    assert a != files_digest(["/data/a/chest/1.png", "/data/a/hand/3.png"]), "a renamed file changes it"
    assert files_digest([np.zeros((2, 2))]) is None


def test_dicom_manufacturers_and_body_parts(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    paths = []
    for i, (maker, part) in enumerate([("ACME", "CHEST"), ("ACME", "HAND"), ("Other", "CHEST")]):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        path = tmp_path / f"{i}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Manufacturer, ds.BodyPartExamined = maker, part
        ds.Rows = ds.Columns = 2
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(4)
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(str(path))
    summary = training_data_summary(paths, ["chest", "hand", "chest"])
    assert summary["organs"] == {"chest": 2, "hand": 1} and summary["n_images"] == 3
    assert summary["dicom_manufacturers"] == {"ACME": 2, "Other": 1}
    assert summary["dicom_body_parts"] == {"CHEST": 2, "HAND": 1}
    assert summary["dicom_sampled"] == 3 <= MAX_DICOM_HEADERS
    assert "dicom_manufacturers" not in training_data_summary(["a/x.png"], ["chest"])
