"""Synthetic radiograph phantoms (codafeat/phantoms.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from codafeat.phantoms import PHANTOM_ORGANS, make_radiograph_phantoms

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
