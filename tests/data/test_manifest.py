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
