"""``codafeat organs`` (codafeat/_cli/organs.py): each file's organ and its source, the value table."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import codafeat.data.organs as organs_mod
from codafeat.cli import main

TAGS = [
    ("CHEST", ""),
    ("PORT CHEST", ""),
    ("THORAX", ""),
    ("HAND LT", ""),
    ("", "XR KNEE 2V"),
    ("FOO", ""),
    ("FOO", ""),
]


@pytest.fixture
def dicom_folder(tmp_path):
    pytest.importorskip("pydicom")
    from helpers import write_dicom

    folder = tmp_path / "archive"
    folder.mkdir()
    for i, (part, study) in enumerate(TAGS):
        write_dicom(folder / f"{i}.dcm", np.zeros((2, 2), np.uint8), BodyPartExamined=part, StudyDescription=study)
    return folder


def _rows(text: str) -> list[list[str]]:
    block = text.split("\n\n")[0].splitlines()
    assert block[0] == "path\torgan\tsource\traw"
    return [line.split("\t") for line in block[1:]]


def test_every_file_with_its_organ_source_and_raw_value_then_the_table(dicom_folder, capsys):
    assert main(["organs", str(dicom_folder), "--organ-from", "dicom"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert [r[0] for r in rows] == [str(dicom_folder / f"{i}.dcm") for i in range(len(TAGS))]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("chest", "tag", "CHEST"),
        ("chest", "tag", "PORT CHEST"),
        ("chest", "tag", "THORAX"),
        ("hand", "tag", "HAND LT"),
        ("knee", "description", ""),
        ("", "unknown", "FOO"),
        ("", "unknown", "FOO"),
    ]
    table = out.split("\n\n")[1]
    assert "'PORT CHEST'" in table and "'FOO'" in table
    assert "5 of 7 file(s) labelled, 3 organ(s): chest 3, hand 1, knee 1" in out
    assert "unmapped: 2 file(s), values 'FOO' (2)" in out


def test_a_second_run_with_the_cache_dir_reads_no_header(dicom_folder, tmp_path, monkeypatch, capsys):
    reads = []
    real = organs_mod.dicom_organ_tags
    monkeypatch.setattr(organs_mod, "dicom_organ_tags", lambda p: reads.append(p) or real(p))
    args = ["organs", str(dicom_folder), "--organ-from", "dicom", "--cache-dir", str(tmp_path / "cache"), "--summary"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert len(reads) == len(TAGS) and not first.startswith("path\t"), "--summary: no per-file rows"
    assert main(args) == 0
    assert len(reads) == len(TAGS) and capsys.readouterr().out == first


def test_the_user_mapping_and_its_source(dicom_folder, tmp_path, capsys):
    mapping = tmp_path / "map.csv"
    mapping.write_text("raw,organ\nfoo,skull\n", encoding="utf-8")
    assert main(["organs", str(dicom_folder), "--organ-from", "dicom", "--organ-map", str(mapping)]) == 0
    out = capsys.readouterr().out
    assert [(r[1], r[2]) for r in _rows(out)][-2:] == [("skull", "user mapping")] * 2 and "unmapped" not in out


def test_folders_and_manifests_show_their_own_labels(tmp_path, capsys, caplog):
    for organ in ("chest", "hand"):
        (tmp_path / organ).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / organ / "a.png")
    assert main(["organs", str(tmp_path)]) == 0
    assert [(r[1], r[2]) for r in _rows(capsys.readouterr().out)] == [("chest", "folder"), ("hand", "folder")]
    (tmp_path / "m.csv").write_text("path,organ\nchest/a.png,lung\n", encoding="utf-8")
    assert main(["organs", str(tmp_path / "m.csv")]) == 0
    assert [(r[1], r[2]) for r in _rows(capsys.readouterr().out)] == [("lung", "manifest")]
    with caplog.at_level(logging.ERROR):
        assert main(["organs", str(tmp_path), "--organ-map", "x.csv"]) == 1
        assert main(["organs", str(tmp_path / "missing")]) == 1
    assert "--organ-map applies to --organ-from dicom" in caplog.text and "missing" in caplog.text


def test_a_missing_folder_in_dicom_mode_exits_1_naming_it(tmp_path, caplog):
    """Issue 27, item 5: it exited 0, reporting the path as one unreadable file."""
    missing = tmp_path / "MISSING_DIR"
    with caplog.at_level(logging.ERROR):
        assert main(["organs", str(missing), "--organ-from", "dicom"]) == 1
    assert "MISSING_DIR" in caplog.text and "does not exist" in caplog.text
