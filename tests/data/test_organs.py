"""Organ labels (codafeat/data/organs.py), and the persistent DICOM tag index (data/tag_index.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import codafeat.data.organs as organs_mod
from codafeat.data.organs import ORGAN_INDEX_NAME as INDEX_NAME
from codafeat.data.organs import collect_organ_images

from helpers import write_dicom


def _dicom(path, part, **tags):
    if part is not None:
        tags["BodyPartExamined"] = part
    return str(write_dicom(path, np.zeros((2, 2), np.uint8), **tags))


def test_dicom_tags_are_read_once_across_runs(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", part) for i, part in enumerate(["CHEST", "HAND", "CHEST"])]
    reads = []
    real = organs_mod.dicom_organ_tags
    monkeypatch.setattr(organs_mod, "dicom_organ_tags", lambda p: reads.append(p) or real(p))
    cache = tmp_path / "cache"
    items, organs, skipped, _ = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(organs) == ["chest", "hand", "chest"] and skipped == [] and len(reads) == 3
    assert (cache / INDEX_NAME).is_file()
    reads.clear()
    _, again, *_ = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(again) == list(organs) and reads == [], "unchanged files: no header read"
    _dicom(tmp_path / "1.dcm", "KNEE")  # edited: another size or modification time
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, edited, *_ = collect_organ_images(files, organ_from="dicom", cache_dir=cache)
    assert list(edited) == ["chest", "knee", "chest"] and reads == [files[1]]


def test_without_a_cache_dir_every_header_is_read(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", "CHEST") for i in range(2)]
    reads = []
    real = organs_mod.dicom_organ_tags
    monkeypatch.setattr(organs_mod, "dicom_organ_tags", lambda p: reads.append(p) or real(p))
    collect_organ_images(files, organ_from="dicom")
    collect_organ_images(files, organ_from="dicom")
    assert len(reads) == 4 and not any(p.name == INDEX_NAME for p in tmp_path.rglob("*"))
    assert np.asarray(collect_organ_images(files, organ_from="dicom")[1]).tolist() == ["chest", "chest"]


#: Messy BodyPartExamined values of real archives and the organ each must become.
MESSY = {
    "CHEST": "chest",
    "THORAX": "chest",
    "PORT CHEST": "chest",
    "CHEST_LAT": "chest",
    "TORAX": "chest",
    "Tórax PA": "chest",
    "LSPINE": "lspine",
    "L SPINE": "lspine",
    "LUMBAR SPINE": "lspine",
    "L-Spine": "lspine",
    "C-SPINE": "cspine",
    "HWS": "cspine",
    "HAND LT": "hand",
    "R HAND": "hand",
    "Hand (left)": "hand",
    "KNEE BILAT": "knee",
    "KNEES": "knee",
    "Knie rechts": "knee",
    "RODILLA IZQ": "knee",
    "SHOULDER_RT": "shoulder",
}


def test_messy_body_parts_become_one_organ_each_and_the_table_is_recorded(tmp_path):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", raw) for i, raw in enumerate(MESSY)]
    items, organs, skipped, table = collect_organ_images(files, organ_from="dicom")
    assert list(organs) == list(MESSY.values()) and skipped == [] and items == files
    by_raw = {row["raw"]: row for row in table}
    assert set(by_raw) == set(MESSY)
    assert all(
        by_raw[raw]["organ"] == organ and by_raw[raw]["source"] == "tag" and by_raw[raw]["count"] == 1
        for raw, organ in MESSY.items()
    )


def test_empty_or_unknown_tags_fall_back_on_the_descriptions(tmp_path):
    pytest.importorskip("pydicom")
    files = [
        _dicom(tmp_path / "a.dcm", "", StudyDescription="XR KNEE 3 VIEWS LEFT"),
        _dicom(tmp_path / "b.dcm", None, SeriesDescription="Thorax p.a."),
        _dicom(tmp_path / "c.dcm", "EXTREMITY", StudyDescription="XR EXTREMITY", ProtocolName="Hand 2V"),
        _dicom(tmp_path / "d.dcm", "EXTREMITY"),  # nothing refines it: the defined term stays
        _dicom(tmp_path / "e.dcm", "PART42", StudyDescription="HAND AND WRIST", SeriesDescription="WRIST PA"),
    ]
    _, organs, _, table = collect_organ_images(files, organ_from="dicom")
    assert list(organs) == ["knee", "chest", "hand", "extremity", "wrist"]
    sources = {(row["raw"], row["organ"]): row["source"] for row in table}
    assert sources[("", "knee")] == "description" and sources[("EXTREMITY", "extremity")] == "tag"
    assert sources[("PART42", "wrist")] == "description", "the study names two organs: the series decides"


def test_unknown_values_raise_with_their_counts_or_are_skipped_and_counted(tmp_path, caplog):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"c{i}.dcm", "CHEST") for i in range(2)]
    odd = [_dicom(tmp_path / f"x{i}.dcm", "BODYPART-XYZ") for i in range(3)]
    empty = [_dicom(tmp_path / "e.dcm", "")]
    with pytest.raises(ValueError, match=r"4 DICOM file\(s\).*'BODYPART-XYZ' \(3\), '' \(1\).*organ_map"):
        collect_organ_images(files + odd + empty, organ_from="dicom")
    with caplog.at_level("WARNING"):
        items, organs, skipped, table = collect_organ_images(files + odd + empty, organ_from="dicom", on_error="skip")
    assert items == files and sorted(skipped) == sorted(odd + empty)
    assert "4 DICOM file(s) skipped" in caplog.text and "'BODYPART-XYZ' (3)" in caplog.text
    assert {"raw": "BODYPART-XYZ", "organ": None, "source": "unknown", "count": 3} in table


def test_a_user_mapping_overrides_the_table_from_a_dict_or_a_csv(tmp_path):
    pytest.importorskip("pydicom")
    files = [
        _dicom(tmp_path / "a.dcm", "BODYPART-XYZ"),
        _dicom(tmp_path / "b.dcm", "L SPINE"),
        _dicom(tmp_path / "c.dcm", "CHEST"),
        _dicom(tmp_path / "d.dcm", "C-SPINE"),
    ]
    mapping = {"bodypart xyz": "hand", "lspine": "spine", "cspine": "spine"}
    _, organs, _, table = collect_organ_images(files, organ_from="dicom", organ_map=mapping)
    assert list(organs) == ["hand", "spine", "chest", "spine"]
    assert {row["raw"]: row["source"] for row in table} == {
        "BODYPART-XYZ": "user mapping",
        "L SPINE": "user mapping",
        "CHEST": "tag",
        "C-SPINE": "user mapping",
    }
    csv = tmp_path / "map.csv"
    csv.write_text("raw,organ\nBodyPart XYZ,hand\nLSPINE,spine\ncspine,spine\n", encoding="utf-8")
    assert list(collect_organ_images(files, organ_from="dicom", organ_map=csv).organs) == list(organs)
    with pytest.raises(ValueError, match="organ_map applies to organ_from='dicom'"):
        collect_organ_images(tmp_path, organ_from="folder", organ_map=mapping)


def test_a_changed_mapping_reads_no_header_again(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / "a.dcm", "FOO"), _dicom(tmp_path / "b.dcm", "CHEST")]
    reads = []
    real = organs_mod.dicom_organ_tags
    monkeypatch.setattr(organs_mod, "dicom_organ_tags", lambda p: reads.append(p) or real(p))
    collect_organ_images(files, organ_from="dicom", on_error="skip", cache_dir=tmp_path / "cache")
    assert len(reads) == 2
    out = collect_organ_images(files, organ_from="dicom", organ_map={"FOO": "knee"}, cache_dir=tmp_path / "cache")
    assert list(out.organs) == ["knee", "chest"] and len(reads) == 2


def test_describe_organs_says_where_each_label_came_from(tmp_path):
    from PIL import Image

    from codafeat.data.organs import describe_organs

    for organ in ("chest", "hand"):
        (tmp_path / "tree" / organ).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "tree" / organ / "x.png")
    rows = describe_organs(tmp_path / "tree")
    assert [(r.organ, r.source, r.raw) for r in rows] == [("chest", "folder", "chest"), ("hand", "folder", "hand")]
    (tmp_path / "m.csv").write_text("path,organ\ntree/chest/x.png,lung\n", encoding="utf-8")
    assert [(r.organ, r.source) for r in describe_organs(tmp_path / "m.csv")] == [("lung", "manifest")]


# --------------------------------------------------------------------------- bad inputs (issue 27)
def test_dicom_mode_refuses_arrays_missing_paths_and_labels_it_would_ignore(tmp_path):
    with pytest.raises(ValueError, match=r"organ_from='dicom' needs file paths .*array of shape \(3, 8, 8\)"):
        collect_organ_images(np.zeros((3, 8, 8)), organ_from="dicom")
    with pytest.raises(FileNotFoundError, match="no_such_dir.*does not exist"):
        collect_organ_images(str(tmp_path / "no_such_dir"), organ_from="dicom")
    with pytest.raises(ValueError, match="y must be None with organ_from='dicom'"):
        collect_organ_images([str(tmp_path / "a.dcm")], ["chest"], organ_from="dicom")


def test_dicom_mode_reads_a_manifest_of_paths_and_refuses_an_organ_column_it_would_ignore(tmp_path):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / f"{i}.dcm", part) for i, part in enumerate(["CHEST", "HAND"])]
    only = tmp_path / "files.csv"
    only.write_text("path\n" + "".join(f"{f}\n" for f in files))
    assert list(collect_organ_images(str(only), organ_from="dicom").organs) == ["chest", "hand"]
    both = tmp_path / "both.csv"
    both.write_text("path,organ\n" + "".join(f"{f},knee\n" for f in files))
    with pytest.raises(ValueError, match=r"has an 'organ' column, but organ_from='dicom'"):
        collect_organ_images(str(both), organ_from="dicom")


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # pydicom on the garbage
def test_a_dicom_file_with_garbage_after_its_meta_header_is_unreadable_not_unknown(tmp_path):
    pytest.importorskip("pydicom")
    good = _dicom(tmp_path / "good.dcm", "CHEST")
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    buf = DicomBytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, pydicom.dcmread(good).file_meta, enforce_standard=True)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(buf.getvalue() + np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes())
    files = organs_mod.dicom_organs([good, str(bad)])
    assert [(f.organ, f.source) for f in files] == [("chest", "tag"), (None, "unreadable")]
    assert "no data element after the file meta header" in files[1].raw


@pytest.mark.parametrize("name", ["../../etc", "a/b", "a\\b", "..", ".", " ", "tab\there"])
def test_organ_names_that_cannot_name_a_folder_are_refused(name):
    with pytest.raises(ValueError, match="cannot be used: organ names become folder names"):
        collect_organ_images([np.zeros((8, 8))] * 2, ["chest", name])


def test_an_organ_map_cannot_make_a_path_either(tmp_path):
    pytest.importorskip("pydicom")
    files = [_dicom(tmp_path / "0.dcm", "CHEST")]
    with pytest.raises(ValueError, match=r"organ name '../x'"):
        collect_organ_images(files, organ_from="dicom", organ_map={"chest": "../x"})
