"""Tests of codafeat.datasets: phantoms, organ folders and manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from codafeat.datasets import (
    PHANTOM_ORGANS,
    make_radiograph_phantoms,
    read_manifest,
    scan_organ_folder,
    write_image_folder,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def phantoms():
    return make_radiograph_phantoms(60, image_size=32, random_state=1)


def pooled(X, f=2):
    n, h, w = X.shape
    return X.reshape(n, h // f, f, w // f, f).mean((2, 4)).reshape(n, -1) / 255.0


# --------------------------------------------------------------------------- phantoms
def test_shapes_dtypes_and_labels(phantoms):
    X, organ, variant = phantoms
    assert X.shape == (360, 32, 32) and X.dtype == np.uint8
    assert organ.shape == variant.shape == (360,)
    assert list(dict.fromkeys(organ)) == list(PHANTOM_ORGANS)  # grouped, in order
    for name, variants in PHANTOM_ORGANS.items():
        got = variant[organ == name]
        assert sorted(set(got)) == sorted(variants)
        assert np.bincount(np.unique(got, return_inverse=True)[1]).tolist() == [30, 30]  # balanced
    # radiograph-like: dark background corners, bright bone, noise
    assert np.median(X[:, :3, :3]) < 60
    assert np.percentile(X, 99.5) > 170
    assert len(np.unique(X)) > 100


def test_determinism_and_options():
    a = make_radiograph_phantoms(3, organs=("knee", "skull"), image_size=48, random_state=5)
    b = make_radiograph_phantoms(3, organs=("knee", "skull"), image_size=48, random_state=5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = make_radiograph_phantoms(3, organs=("knee", "skull"), image_size=48, random_state=6)
    assert not np.array_equal(a[0], c[0])
    two = make_radiograph_phantoms(2, organs="hand", random_state=0, return_variants=False)
    assert len(two) == 2 and two[0].shape == (2, 64, 64) and two[1].tolist() == ["hand", "hand"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_per_organ": 0}, "n_per_organ"),
        ({"image_size": 8}, "image_size"),
        ({"organs": ("chest", "elbow")}, "unknown organ"),
        ({"organs": ("chest", "chest")}, "more than once"),
        ({"organs": ()}, "organs is empty"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_radiograph_phantoms(**kwargs)


def test_organs_are_separable_by_a_trivial_feature(phantoms):
    X, organ, _ = phantoms
    acc = cross_val_score(KNeighborsClassifier(3), pooled(X), organ, cv=5).mean()
    assert acc > 0.9


def test_variants_within_each_organ_differ(phantoms):
    X, organ, variant = phantoms
    F = pooled(X)
    for name in PHANTOM_ORGANS:
        m = organ == name
        acc = cross_val_score(LogisticRegression(max_iter=2000), F[m], variant[m], cv=5).mean()
        assert acc > 0.75, (name, acc)
    # right hands are left hands mirrored: flipping the right ones makes the mean images agree
    hand = organ == "hand"
    left = X[hand & (variant == "left")].mean(0)
    right = X[hand & (variant == "right")].mean(0)
    assert np.abs(left - right[:, ::-1]).mean() < 0.8 * np.abs(left - right).mean()


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
