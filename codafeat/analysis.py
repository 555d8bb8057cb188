"""Zero-shot analysis of embeddings: how well organs (and variants within an organ) separate.

The paper's Fig. 2 shows, without any training on the shown images, that Coda embeddings
form one cluster per organ (inter-organ diversity) with islands per view or side inside
each organ (intra-organ variation). These functions put numbers and a picture on it:

* :func:`organ_separation`: leave-one-out kNN accuracy (cosine), NMI and ARI of k-means
  clusters against the labels, cosine silhouette;
* :func:`variant_separation`: the same within each organ, on variant labels (Fig. 2b);
* :func:`plot_embedding`: a t-SNE or PCA scatter plot written to a PNG (needs matplotlib,
  the ``plot`` extra).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

logger = logging.getLogger(__name__)

__all__ = ["organ_separation", "plot_embedding", "project_2d", "variant_separation"]

#: Above this many samples the silhouette is computed on a random sample of this size.
SILHOUETTE_MAX_SAMPLES = 10_000
_CHUNK = 2048


def _check(embeddings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    E = np.asarray(embeddings, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-d array (n_samples, n_features), got shape {E.shape}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(E):
        raise ValueError(f"labels must be 1-d with one label per embedding ({len(E)}), got shape {y.shape}")
    bad = ~np.isfinite(E).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} embedding row(s) contain NaN/inf (e.g. rows {np.flatnonzero(bad)[:5].tolist()}; "
            "skipped images?): drop them and their labels first"
        )
    return E, y


def _unit_rows(E: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise ValueError(
            f"{int(zero.sum())} embedding row(s) are all zeros (e.g. rows {np.flatnonzero(zero)[:5].tolist()}): "
            "cosine similarity is undefined for them"
        )
    return E / norms


def _loo_knn_accuracy(U: np.ndarray, codes: np.ndarray, k: int) -> float:
    """Leave-one-out majority vote of the k most cosine-similar other samples."""
    n = len(U)
    n_classes = int(codes.max()) + 1
    correct = 0
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        sim = U[start:stop] @ U.T
        sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # leave the sample itself out
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = np.zeros((stop - start, n_classes), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(stop - start), k), codes[nn].ravel()), 1)
        correct += int((votes.argmax(axis=1) == codes[start:stop]).sum())  # ties -> smallest label, as sklearn
    return correct / n


def organ_separation(
    embeddings: Any,
    labels: Any,
    *,
    n_neighbors: int = 5,
    random_state: Any = 0,
) -> dict[str, float]:
    """Measure how well embeddings separate the labels, without training on them.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        E.g. ``CodaEncoder(...).fit().transform(images)``.
    labels : array-like of shape (n_samples,)
        E.g. organ names.
    n_neighbors : int, default=5
        Neighbours of the kNN vote.
    random_state : int, RandomState or None, default=0
        Seed of k-means (and of the silhouette sample for large inputs).

    Returns
    -------
    dict
        ``knn_accuracy``: leave-one-out accuracy of a uniform-vote kNN with cosine
        similarity (each sample classified by its ``n_neighbors`` nearest *other* samples);
        ``nmi`` and ``ari``: normalised mutual information and adjusted Rand index between
        the labels and ``KMeans(n_clusters=n_labels, n_init=10)`` run on the L2-normalised
        embeddings (spherical geometry, as the cosine metrics); ``silhouette``: cosine
        silhouette of the labels (on a random sample of
        :data:`SILHOUETTE_MAX_SAMPLES` when larger); plus ``n_samples``, ``n_labels``,
        ``n_neighbors``.

    Raises
    ------
    ValueError
        Fewer than two distinct labels, ``n_neighbors`` not below ``n_samples``, or NaN /
        all-zero embedding rows.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.analysis import organ_separation
    >>> E = np.array([[1, 0.1], [1, 0.2], [1, 0.0], [0.1, 1], [0.2, 1], [0.0, 1]])
    >>> r = organ_separation(E, ["a"] * 3 + ["b"] * 3, n_neighbors=1)
    >>> r["knn_accuracy"], r["ari"]
    (1.0, 1.0)
    """
    E, y = _check(embeddings, labels)
    classes, codes = np.unique(y, return_inverse=True)
    n, n_labels = len(E), len(classes)
    if n_labels < 2:
        raise ValueError(f"organ_separation needs at least 2 distinct labels, got {classes.tolist()}")
    if not isinstance(n_neighbors, (int, np.integer)) or isinstance(n_neighbors, bool) or not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be an integer in [1, n_samples - 1] = [1, {n - 1}], got {n_neighbors!r}")
    U = _unit_rows(E)
    knn = _loo_knn_accuracy(U, codes, int(n_neighbors))
    km = KMeans(n_clusters=n_labels, n_init=10, random_state=random_state).fit(U)
    sample = SILHOUETTE_MAX_SAMPLES if n > SILHOUETTE_MAX_SAMPLES else None
    sil = (
        silhouette_score(E, codes, metric="cosine", sample_size=sample, random_state=random_state)
        if n > n_labels
        else float("nan")
    )
    return {
        "knn_accuracy": float(knn),
        "nmi": float(normalized_mutual_info_score(codes, km.labels_)),
        "ari": float(adjusted_rand_score(codes, km.labels_)),
        "silhouette": float(sil),
        "n_samples": int(n),
        "n_labels": int(n_labels),
        "n_neighbors": int(n_neighbors),
    }


def variant_separation(
    embeddings: Any,
    groups: Any,
    variants: Any,
    *,
    n_neighbors: int = 5,
    random_state: Any = 0,
) -> dict[str, Any]:
    """:func:`organ_separation` of the variant labels inside each group (e.g. views within an organ).

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
    groups : array-like of shape (n_samples,)
        E.g. organ names.
    variants : array-like of shape (n_samples,)
        E.g. view or side within the organ.
    n_neighbors : int, default=5
        Neighbours of the kNN vote (at most the group size minus one).
    random_state : int, RandomState or None, default=0

    Returns
    -------
    dict
        ``per_group``: ``{group: organ_separation(...)}`` for each group with at least two
        variants; ``mean``: the mean of each metric over those groups; ``skipped``: groups
        with a single variant or fewer than three images (listed, not silently dropped).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> E = rng.normal(size=(40, 4))
    >>> organs, views = np.repeat(["chest", "hand"], 20), np.tile(np.repeat(["pa", "lat"], 10), 2)
    >>> E[views == "lat"] += 3
    >>> out = variant_separation(E, organs, views)
    >>> sorted(out["per_group"]), out["mean"]["knn_accuracy"] > 0.7, out["skipped"]
    (['chest', 'hand'], True, [])
    """
    E, g = _check(embeddings, groups)
    v = np.asarray(variants)
    if v.shape != g.shape:
        raise ValueError(f"variants must have one entry per embedding ({len(E)}), got shape {v.shape}")
    per: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    for name in np.unique(g).tolist():
        m = g == name
        if len(np.unique(v[m])) < 2 or m.sum() < 3:
            skipped.append(str(name))
            continue
        per[str(name)] = organ_separation(
            E[m], v[m], n_neighbors=min(int(n_neighbors), int(m.sum()) - 1), random_state=random_state
        )
    if skipped:
        logger.info("variant_separation: group(s) without two variants or three images: %s", skipped)
    keys = ("knn_accuracy", "nmi", "ari", "silhouette")
    mean = {k: float(np.mean([r[k] for r in per.values()])) if per else float("nan") for k in keys}
    return {"per_group": per, "mean": mean, "skipped": skipped}


# --------------------------------------------------------------------------- plots
def project_2d(embeddings: Any, method: str = "tsne", *, random_state: Any = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-d coordinates of embeddings by t-SNE (cosine) or PCA.

    The t-SNE perplexity is lowered to ``(n_samples - 1) / 3`` for small inputs.

    Returns
    -------
    ndarray of shape (n_samples, 2)
    """
    E = np.asarray(embeddings, dtype=np.float64)
    if E.ndim != 2 or len(E) < 3:
        raise ValueError(f"embeddings must be a 2-d array with at least 3 rows, got shape {E.shape}")
    if not np.isfinite(E).all():
        raise ValueError("embeddings contain NaN/inf (skipped images?): drop those rows first")
    if method == "pca":
        return PCA(n_components=2, random_state=random_state).fit_transform(E)
    if method == "tsne":
        perp = float(min(perplexity, max(1.0, (len(E) - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perp, metric="cosine", init="pca", random_state=random_state)
        return tsne.fit_transform(E)
    raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")


def _require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('plot_embedding needs matplotlib: pip install "codafeat[plot]"') from exc
    return Figure, FigureCanvasAgg


_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">")


def _legend(classes: list, kinds: list | None, colours: Any) -> list:
    """Legend entries: one colour per class, then (with variants) one marker per variant."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="", color=colours(i % colours.N), label=str(c)) for i, c in enumerate(classes)
    ]
    if kinds is not None:
        handles += [
            Line2D([], [], marker=_MARKERS[i % len(_MARKERS)], ls="", color="0.4", label=str(k))
            for i, k in enumerate(kinds)
        ]
    return handles


def plot_embedding(
    embeddings: Any,
    labels: Any,
    method: str = "tsne",
    path: str | os.PathLike = "embedding.png",
    *,
    variants: Any = None,
    title: str | None = None,
    random_state: Any = 0,
    dpi: int = 150,
) -> Path:
    """Write a 2-d map of embeddings coloured by label to a PNG (like the paper's Fig. 2).

    Uses matplotlib's Agg canvas directly: the global pyplot backend is not changed.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,)
        Colour of each point (e.g. organ).
    method : {"tsne", "pca"}, default="tsne"
        Projection (see :func:`project_2d`).
    path : str or path, default="embedding.png"
        The PNG to write (folders are created).
    variants : array-like of shape (n_samples,), optional
        Marker shape of each point (e.g. view or side), to show within-organ islands.
    title : str, optional
        Figure title (default: the method name and the number of points).
    random_state : int, RandomState or None, default=0
    dpi : int, default=150

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImportError
        If matplotlib is missing (``pip install "codafeat[plot]"``).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> E = np.random.default_rng(0).normal(size=(20, 4))
    >>> path = plot_embedding(E, np.repeat(["a", "b"], 10), "pca", tempfile.mkdtemp() + "/emb.png")
    >>> path.suffix
    '.png'
    """
    Figure, FigureCanvasAgg = _require_matplotlib()
    E, y = _check(embeddings, labels)
    v = None if variants is None else np.asarray(variants)
    if v is not None and v.shape != y.shape:
        raise ValueError(f"variants must have one entry per embedding ({len(E)}), got shape {v.shape}")
    xy = project_2d(E, method, random_state=random_state)

    fig = Figure(figsize=(6.4, 5.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    classes = np.unique(y).tolist()
    from matplotlib import colormaps

    colours = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    kinds = [None] if v is None else np.unique(v).tolist()
    size = float(np.clip(3000.0 / len(E), 4.0, 40.0))
    for ci, c in enumerate(classes):
        for ki, k in enumerate(kinds):
            m = (y == c) if k is None else (y == c) & (v == k)
            if m.any():
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=size,
                    color=colours(ci % colours.N),
                    marker=_MARKERS[ki % len(_MARKERS)],
                    alpha=0.8,
                    linewidths=0,
                )
    ax.legend(
        handles=_legend(classes, kinds if v is not None else None, colours),
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        fontsize=8,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{'t-SNE' if method == 'tsne' else 'PCA'} 1")
    ax.set_ylabel(f"{'t-SNE' if method == 'tsne' else 'PCA'} 2")
    ax.set_title(title if title is not None else f"{'t-SNE' if method == 'tsne' else 'PCA'} of {len(E)} embeddings")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    logger.info("wrote %s", out)
    return out
