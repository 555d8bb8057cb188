"""Organ folders and manifests (codafeat/data/manifest.py): writing, scanning, reading, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codafeat.data.manifest import read_manifest, scan_organ_folder, write_image_folder
from codafeat.phantoms import make_radiograph_phantoms

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _csv(tmp_path, text: str | bytes, name: str = "list.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_a_plain_duplicate_is_used_once_with_a_warning(tmp_path):
    path = _csv(tmp_path, "path,organ\na.png,chest\nb.png,hand\n./a.png,chest\n")
    with pytest.warns(UserWarning, match=r"1 row\(s\) repeat .*lines \[4\]"):
        paths, labels = read_manifest(path, check_files=False)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["a.png", "b.png"] and labels.tolist() == ["chest", "hand"]


def test_one_file_under_two_labels_names_both_lines(tmp_path):
    path = _csv(tmp_path, "path,organ\na.png,chest\nb.png,hand\na.png,knee\n")
    with pytest.raises(ValueError, match=r"'a.png' is listed twice .*'chest' on line 2 and 'knee' on line 4"):
        read_manifest(path, check_files=False)


def test_a_manifest_that_is_not_utf8_is_named(tmp_path):
    path = _csv(tmp_path, b"path,organ\n\xff\xfe.png,chest\n")
    with pytest.raises(ValueError, match=r"list.csv.* is not UTF-8"):
        read_manifest(path, check_files=False)


def test_a_clean_manifest_says_nothing(tmp_path):
    path = _csv(tmp_path, "path,organ\na.png,chest\nb.png,hand\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_manifest(path, check_files=False)[0]) == 2


# --------------------------------------------------------------------------- Parquet manifests
def _parquet(tmp_path, columns: dict, name: str = "list.parquet"):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


def test_a_parquet_manifest_reads_like_the_csv_one(tmp_path):
    rows = {"path": ["a.png", "sub/b.png", "/abs/c.png"], "organ": ["chest", "hand", "knee"], "site": [1, 2, 3]}
    pq_paths, pq_labels = read_manifest(_parquet(tmp_path, rows), check_files=False)
    csv_text = "path,organ,site\n" + "".join(f"{p},{o},{s}\n" for p, o, s in zip(*rows.values()))
    csv_paths, csv_labels = read_manifest(_csv(tmp_path, csv_text), check_files=False)
    assert pq_paths == csv_paths and pq_labels.tolist() == csv_labels.tolist() == ["chest", "hand", "knee"]
    assert pq_paths[0] == str(tmp_path / "a.png") and pq_paths[2] == "/abs/c.png"


def test_parquet_labels_of_any_type_and_other_columns(tmp_path):
    path = _parquet(tmp_path, {"file": ["a.png", "b.png"], "kl_grade": [0, 3]})
    paths, labels = read_manifest(path, path_column="file", label_column="kl_grade", check_files=False)
    assert labels.tolist() == ["0", "3"]


def test_parquet_errors_name_the_file_and_the_rows(tmp_path):
    with pytest.raises(ValueError, match=r"list.parquet.*lacks column\(s\) \['organ'\]"):
        read_manifest(_parquet(tmp_path, {"path": ["a.png"], "label": ["x"]}), check_files=False)
    with pytest.raises(ValueError, match=r"empty 'path' or 'organ' \(rows \[2\]\)"):
        read_manifest(_parquet(tmp_path, {"path": ["a.png", None], "organ": ["x", "y"]}), check_files=False)
    with pytest.raises(ValueError, match=r"'chest' on row 1 and 'knee' on row 2"):
        read_manifest(_parquet(tmp_path, {"path": ["a.png", "a.png"], "organ": ["chest", "knee"]}), check_files=False)
    with pytest.raises(ValueError, match=r"has a header but no rows"):
        read_manifest(_parquet(tmp_path, {"path": [], "organ": []}), check_files=False)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match=r"damaged.parquet.*not a readable Parquet file"):
        read_manifest(damaged, check_files=False)
    with pytest.raises(ValueError, match=r"list.txt.*unsupported format"):
        read_manifest(tmp_path / "list.txt")


def test_a_parquet_manifest_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    import sys

    path = _parquet(tmp_path, {"path": ["a.png"], "organ": ["chest"]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"list.parquet.*pip install 'codafeat\[parquet\]'"):
        read_manifest(path, check_files=False)


def test_pretraining_and_probing_take_a_parquet_manifest(tmp_path):
    from PIL import Image

    from codafeat.data.organs import collect_organ_images

    for i in range(4):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / f"{i}.png")
    path = _parquet(tmp_path, {"path": [f"{i}.png" for i in range(4)], "organ": ["chest", "chest", "hand", "hand"]})
    items, organs, skipped, mapping = collect_organ_images(path)
    assert items == [str(tmp_path / f"{i}.png") for i in range(4)] and organs.tolist() == ["chest"] * 2 + ["hand"] * 2
    with pytest.raises(FileNotFoundError, match="1 listed image"):
        collect_organ_images(_parquet(tmp_path, {"path": ["0.png", "gone.png"], "organ": ["a", "b"]}, "m2.parquet"))


# --------------------------------------------------------------------------- folders
def test_write_scan_and_manifest_round_trip(tmp_path):
    X, organ, variant = make_radiograph_phantoms(3, organs=("spine", "chest"), image_size=32, random_state=0)
    root = write_image_folder(X, organ, tmp_path / "out", variants=variant)
    assert root == tmp_path / "out"
    assert sorted(p.name for p in root.iterdir()) == ["chest", "labels.csv", "spine"]
    paths, labels = scan_organ_folder(root)
    assert len(paths) == 6 and sorted(labels.tolist()) == sorted(organ.tolist())
    for p, lab in zip(paths, labels):
        i = int(Path(p).stem.split("_")[-1])
        assert lab == organ[i]
        np.testing.assert_array_equal(np.asarray(Image.open(p)), X[i])
    mpaths, mlabels = read_manifest(root / "labels.csv")
    assert mlabels.tolist() == organ.tolist()
    for i, p in enumerate(mpaths):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), X[i])
    _, mvariants = read_manifest(root / "labels.csv", label_column="variant")
    assert mvariants.tolist() == variant.tolist()


def test_write_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    X, organ = make_radiograph_phantoms(4, organs=("hand",), image_size=16, random_state=0, return_variants=False)
    write_image_folder(X, organ, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_image_folder(X[:2], organ[:2], tmp_path)
    keep = tmp_path / "hand" / "notes.png"
    Image.fromarray(X[0]).save(keep)
    write_image_folder(X[:2], organ[:2], tmp_path, overwrite=True)
    names = sorted(p.name for p in (tmp_path / "hand").iterdir())
    assert names == ["hand_00000.png", "hand_00001.png", "notes.png"]  # old images gone, other files kept


def test_write_validates_inputs(tmp_path):
    img = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="folder name"):
        write_image_folder(img, ["ok", "../evil"], tmp_path / "a")
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        write_image_folder(img, ["a"], tmp_path / "b")
    with pytest.raises(ValueError, match="image 0"):
        write_image_folder(np.zeros((1, 8, 8), np.float32), ["a"], tmp_path / "c")
    p = write_image_folder(np.full((1, 8, 8), 4000, np.uint16), ["x"], tmp_path / "d")
    assert np.asarray(Image.open(p / "x" / "x_00000.png")).max() == 4000


def test_scan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        scan_organ_folder(tmp_path / "missing")
    (tmp_path / "empty_organ").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        scan_organ_folder(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match=r"directly in .*loose.png"):
        scan_organ_folder(tmp_path)


def test_scan_is_recursive_and_reports_empty_folders(tmp_path, caplog):
    deep = tmp_path / "knee" / "left" / "2020"
    deep.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(deep / "a.png")
    (tmp_path / "hand").mkdir()
    (tmp_path / "knee" / "readme.txt").write_text("not an image")
    with caplog.at_level("WARNING"):
        paths, labels = scan_organ_folder(tmp_path)
    assert labels.tolist() == ["knee"] and paths == [str(deep / "a.png")]
    assert "hand" in caplog.text


def test_manifest_errors(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_manifest(bad)
    bad.write_text("file,organ\na.png,knee\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path'\]; its columns are \['file', 'organ'\]"):
        read_manifest(bad)
    bad.write_text("path,organ\na.png,knee\nb.png,hand\nc.png,hand\n")
    with pytest.raises(FileNotFoundError, match="2 listed image"):
        read_manifest(bad)
    assert len(read_manifest(bad, check_files=False)[0]) == 3
    bad.write_text("path,organ\na.png,\n")
    with pytest.raises(ValueError, match=r"empty .*lines \[2\]"):
        read_manifest(bad)
    bad.write_text("path,organ\n")
    with pytest.raises(ValueError, match="no rows"):
        read_manifest(bad)
    # BOM, spaces in the header, absolute paths, other column names
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "m.csv").write_text(f"\ufeffimage , kl_grade\n{tmp_path / 'a.png'},3\n", encoding="utf-8")
    paths, labels = read_manifest(sub / "m.csv", path_column="image", label_column="kl_grade")
    assert paths == [str(tmp_path / "a.png")] and labels.tolist() == ["3"]


@pytest.mark.data
def test_real_organs_eval_folder_and_manifest():
    root = DATA / "organs_eval"
    if not root.is_dir():
        pytest.skip("../shared/data is absent")
    paths, labels = scan_organ_folder(root)
    assert set(labels) == {"chest", "hand", "knee"} and len(paths) == 900
    mpaths, mlabels = read_manifest(root / "labels.csv")
    assert sorted(zip(map(str, map(Path, mpaths)), mlabels)) == sorted(zip(map(str, map(Path, paths)), labels))


def test_a_nan_organ_in_parquet_is_an_empty_cell_not_the_organ_nan(tmp_path):
    """Issue 27, item 6: a numeric organ code column keeps a missing value as NaN, not null."""
    path = _parquet(tmp_path, {"path": ["a.png", "b.png"], "organ": [1.0, float("nan")]})
    with pytest.raises(ValueError, match=r"empty 'path' or 'organ' \(rows \[2\]\)"):
        read_manifest(path, check_files=False)


def test_a_path_only_manifest_for_labels_from_elsewhere(tmp_path):
    from codafeat.data.manifest import manifest_columns, read_manifest_paths

    only = _csv(tmp_path, "path,site\na.png,1\nb.png,2\n")
    paths, labels = read_manifest_paths(only, check_files=False)
    assert paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")] and labels is None
    assert manifest_columns(only) == ["path", "site"]
    with_organs = _csv(tmp_path, "path,organ\na.png,chest\n", name="o.csv")
    assert read_manifest_paths(with_organs, check_files=False)[1].tolist() == ["chest"]
    with pytest.raises(ValueError, match=r"empty 'path' \(lines \[3\]\)"):
        read_manifest_paths(_csv(tmp_path, 'path\na.png\n""\n', name="e.csv"), check_files=False)
