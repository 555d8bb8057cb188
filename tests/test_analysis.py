"""Tests of codafeat.analysis against scikit-learn references."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from codafeat.analysis import (
    organ_separation,
    plot_embedding,
    project_2d,
    variant_separation,
)


def clusters(n=(20, 20, 20), dim=6, sep=1.2, seed=0):
    rng = np.random.RandomState(seed)
    E, y = [], []
    for c, k in enumerate(n):
        centre = rng.normal(0, 1, dim) * sep
        E.append(centre + rng.normal(0, 1, (k, dim)))
        y += [f"organ{c}"] * k
    return np.vstack(E), np.array(y)


def test_knn_accuracy_matches_sklearn_leave_one_out():
    E, y = clusters(sep=0.8)
    for k in (1, 5):
        ref = cross_val_score(KNeighborsClassifier(n_neighbors=k, metric="cosine"), E, y, cv=LeaveOneOut()).mean()
        got = organ_separation(E, y, n_neighbors=k)["knn_accuracy"]
        assert got == pytest.approx(ref)
        assert 0.4 < got < 1.0  # the data is neither trivial nor hopeless


def test_clustering_scores_match_sklearn():
    E, y = clusters(sep=1.0, seed=3)
    r = organ_separation(E, y, random_state=4)
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    km = KMeans(n_clusters=3, n_init=10, random_state=4).fit(U)
    assert r["nmi"] == pytest.approx(normalized_mutual_info_score(y, km.labels_))
    assert r["ari"] == pytest.approx(adjusted_rand_score(y, km.labels_))
    assert r["silhouette"] == pytest.approx(silhouette_score(E, y, metric="cosine"))
    assert (r["n_samples"], r["n_labels"], r["n_neighbors"]) == (60, 3, 5)


def test_perfect_and_random_structure():
    E, y = clusters(sep=20.0)
    r = organ_separation(E, y)
    assert r["knn_accuracy"] == 1.0 and r["nmi"] == pytest.approx(1.0) and r["ari"] == pytest.approx(1.0)
    assert r["silhouette"] > 0.5
    rng = np.random.RandomState(0)
    noise = organ_separation(rng.normal(size=(90, 8)), rng.permutation(np.repeat(["a", "b", "c"], 30)))
    assert noise["knn_accuracy"] < 0.6 and abs(noise["ari"]) < 0.1 and noise["silhouette"] < 0.05


@settings(max_examples=10, deadline=None)
@given(scales=st.lists(st.floats(0.1, 100.0), min_size=40, max_size=40), seed=st.integers(0, 1000))
def test_cosine_metrics_ignore_row_scale(scales, seed):
    E, y = clusters(n=(20, 20), sep=0.7, seed=seed)
    a = organ_separation(E, y)
    b = organ_separation(E * np.asarray(scales)[:, None], y)
    assert a["knn_accuracy"] == b["knn_accuracy"]
    assert a["silhouette"] == pytest.approx(b["silhouette"], abs=1e-9)


def test_bad_inputs():
    E, y = clusters(n=(3, 3))
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        organ_separation(E, ["a"] * 6)
    with pytest.raises(ValueError, match="n_neighbors"):
        organ_separation(E, y, n_neighbors=6)
    with pytest.raises(ValueError, match="one label per embedding"):
        organ_separation(E, y[:5])
    bad = E.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[2\]"):
        organ_separation(bad, y)
    bad[2] = 0.0
    with pytest.raises(ValueError, match="all zeros"):
        organ_separation(bad, y)


def test_variant_separation_is_organ_separation_per_group():
    E, v = clusters(n=(10, 10, 10, 10), sep=3.0, seed=1)
    organs = np.repeat(["knee", "hand"], 20)
    variants = np.where(np.isin(v, ["organ0", "organ2"]), "left", "right")
    r = variant_separation(E, organs, variants, n_neighbors=3)
    assert sorted(r["per_group"]) == ["hand", "knee"]
    ref = organ_separation(E[organs == "knee"], variants[organs == "knee"], n_neighbors=3)
    assert r["per_group"]["knee"] == ref
    assert r["mean"]["ari"] == pytest.approx(np.mean([g["ari"] for g in r["per_group"].values()]))
    one = variant_separation(np.r_[E, E[:4]], np.r_[organs, ["skull"] * 4], np.r_[variants, ["ap"] * 4])
    assert one["skipped"] == ["skull"] and "skull" not in one["per_group"]


def test_project_2d():
    E, _ = clusters()
    np.testing.assert_allclose(project_2d(E, "pca"), PCA(2, random_state=0).fit_transform(E))
    xy = project_2d(E[:12], "tsne")  # perplexity lowered to fit 12 points
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    with pytest.raises(ValueError, match="method"):
        project_2d(E, "umap")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_writes_a_png(tmp_path, method):
    pytest.importorskip("matplotlib")
    E, y = clusters(n=(8, 8, 8))
    variants = np.tile(["frontal", "lateral"], 12)
    out = plot_embedding(E, y, method, tmp_path / "sub" / "fig.png", variants=variants, title="t", dpi=50)
    assert out == tmp_path / "sub" / "fig.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        colours = {tuple(px) for px in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}
    assert len(colours) > 5  # coloured points, not a blank canvas


def test_plot_embedding_does_not_switch_the_pyplot_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    E, y = clusters(n=(5, 5))
    plot_embedding(E, y, "pca", tmp_path / "f.png", dpi=30)
    assert matplotlib.get_backend() == before


def test_plot_embedding_without_matplotlib(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    E, y = clusters(n=(5, 5))
    with pytest.raises(ImportError, match=r'pip install "codafeat\[plot\]"'):
        plot_embedding(E, y, "pca", tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()
