"""read_manifest: duplicates, conflicting labels and encodings (issue 19, items 10 and 13)."""

from __future__ import annotations

import warnings

import pytest

from codafeat.data.manifest import read_manifest


def _csv(tmp_path, text: str | bytes):
    path = tmp_path / "list.csv"
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

    for i, organ in enumerate(["chest", "chest", "hand", "hand"]):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / f"{i}.png")
    path = _parquet(tmp_path, {"path": [f"{i}.png" for i in range(4)], "organ": ["chest", "chest", "hand", "hand"]})
    items, organs, skipped, mapping = collect_organ_images(path)
    assert items == [str(tmp_path / f"{i}.png") for i in range(4)] and organs.tolist() == ["chest"] * 2 + ["hand"] * 2
    with pytest.raises(FileNotFoundError, match="1 listed image"):
        collect_organ_images(_parquet(tmp_path, {"path": ["0.png", "gone.png"], "organ": ["a", "b"]}, "m2.parquet"))
