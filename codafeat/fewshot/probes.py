"""Few-shot evaluation: a cross-validation splitter, probes on frozen features, a results table.

The paper evaluates transfer with a few labelled images (Table 1: 1%, 10%, 20% and 50% of the
training data, mean over repeats). This module gives that protocol in scikit-learn terms:

* :class:`FewShotSplit` draws a stratified training set of ``n_shots`` images per class or a
  ``fraction`` of the data, tests on the rest (or on a fixed test set), ``n_repeats`` times. It
  is an ordinary CV splitter: pass it as ``cv=`` to :func:`~sklearn.model_selection.cross_val_score`,
  :func:`~sklearn.model_selection.cross_validate` or :class:`~sklearn.model_selection.GridSearchCV`.
* :func:`few_shot_report` runs one or several estimators (e.g. ``make_pipeline(CodaEncoder(...),
  LogisticRegression())``) over several fractions or shot counts and returns a
  :class:`FewShotReport`, a table with rows = methods and columns = data fractions, each cell
  ``mean ± std`` over the repeats, printable as markdown with :func:`format_table`.
* :func:`knn_probe` and :func:`linear_probe` run the same protocol on precomputed embeddings
  with the standard probes built by :func:`make_knn_probe` (cosine kNN) and
  :func:`make_linear_probe` (standardised logistic regression).

Every method in one report sees the same splits (a paired comparison): the splits depend only
on ``random_state``, the labels and the fraction, never on the estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._estimator.params import draw_seed
from .report import FewShotReport, format_table
from .split import FewShotSplit

logger = logging.getLogger(__name__)

#: The data fractions of the paper's Table 1.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 0.2, 0.5)

__all__ = [
    "DEFAULT_FRACTIONS",
    "FewShotReport",
    "FewShotSplit",
    "KNNProbe",
    "default_scoring",
    "few_shot_report",
    "format_table",
    "knn_probe",
    "linear_probe",
    "make_knn_probe",
    "make_linear_probe",
]


# =========================================================================== probes
class KNNProbe(ClassifierMixin, BaseEstimator):
    """Cosine k-nearest-neighbour probe that works with any training-set size.

    A :class:`~sklearn.neighbors.KNeighborsClassifier` whose ``k`` is
    ``min(n_neighbors, n_training_samples)``, so that a 1-shot training set still fits.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours that vote (at most the number of training samples).
    weights : {"uniform", "distance"}, default="distance"
        Vote weights, as in :class:`~sklearn.neighbors.KNeighborsClassifier`.
    metric : str, default="cosine"
        Distance between embeddings.

    Attributes
    ----------
    knn_ : KNeighborsClassifier
        The fitted classifier.
    n_neighbors_ : int
        The ``k`` used.
    classes_ : ndarray
        Class labels.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.fewshot.probes import KNNProbe
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> KNNProbe().fit(X, ["a", "b"]).predict([[0.9, 0.1]]).tolist()
    ['a']
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"})],
        "metric": [str],
    }

    def __init__(self, *, n_neighbors: int = 5, weights: str = "distance", metric: str = "cosine") -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric

    def fit(self, X: Any, y: Any) -> KNNProbe:
        """Store the training embeddings.

        Returns
        -------
        self : KNNProbe
        """
        self._validate_params()
        X, y = validate_data(self, X, y)
        k = min(int(self.n_neighbors), X.shape[0])
        self.knn_ = KNeighborsClassifier(n_neighbors=k, weights=self.weights, metric=self.metric).fit(X, y)
        self.n_neighbors_ = k
        self.classes_ = self.knn_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Majority (or distance-weighted) vote of the nearest training embeddings."""
        check_is_fitted(self, "knn_")
        X = validate_data(self, X, reset=False)
        return self.knn_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the (weighted) fraction of neighbour votes per class."""
        check_is_fitted(self, "knn_")
        X = validate_data(self, X, reset=False)
        return self.knn_.predict_proba(X)


def make_knn_probe(n_neighbors: int = 5, *, weights: str = "distance") -> KNNProbe:
    """The standard kNN probe on frozen embeddings: cosine distance, ``k = n_neighbors``."""
    return KNNProbe(n_neighbors=n_neighbors, weights=weights, metric="cosine")


def make_linear_probe(C: float = 1.0, *, max_iter: int = 2000) -> Pipeline:
    """The standard linear probe: ``StandardScaler`` then L2-regularised ``LogisticRegression``."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


def default_scoring(y: Any) -> str:
    """The default few-shot score: ``"roc_auc"`` for two classes (as the paper's Table 1), else ``"accuracy"``."""
    return "roc_auc" if len(np.unique(np.asarray(y))) == 2 else "accuracy"


def _settings(fractions: Any, shots: Any) -> list[tuple[str, dict[str, Any]]]:
    if shots is not None:
        if fractions is not None and tuple(fractions) != DEFAULT_FRACTIONS:
            raise ValueError("pass either fractions or shots, not both")
        shots = [shots] if isinstance(shots, Integral) else list(shots)
        if not shots:
            raise ValueError("shots is empty")
        return [(f"{int(k)}-shot", {"n_shots": int(k)}) for k in shots]
    if fractions is None:
        fractions = DEFAULT_FRACTIONS
    fractions = [fractions] if isinstance(fractions, Real) else list(fractions)
    if not fractions:
        raise ValueError("fractions is empty")
    return [(f"{100 * float(f):g}%", {"fraction": float(f)}) for f in fractions]


def few_shot_report(
    estimator: Any,
    X: Any,
    y: Any,
    fractions: Sequence[float] | None = DEFAULT_FRACTIONS,
    *,
    shots: Sequence[int] | int | None = None,
    n_repeats: int = 10,
    scoring: Any = None,
    test_index: Any = None,
    groups: Any = None,
    random_state: Any = 0,
    n_jobs: int | None = None,
    name: str | None = None,
) -> FewShotReport:
    """Evaluate estimators with few labelled images, over several data fractions.

    For every fraction (or shot count) the estimator is cross-validated with
    :class:`FewShotSplit` (``n_repeats`` stratified draws); the report holds every score.

    Parameters
    ----------
    estimator : estimator or mapping of str to estimator
        What to evaluate, e.g. ``make_pipeline(CodaEncoder(weights=...), LogisticRegression())``.
        A mapping gives one row per entry (all rows see the same splits).
    X : array-like, sequence of images or paths
        The data, in any form the estimator accepts.
    y : array-like of shape (n_samples,)
        Class labels.
    fractions : sequence of float, default=(0.01, 0.1, 0.2, 0.5)
        Training fractions (the paper's Table 1). Ignored when ``shots`` is given (then
        leave it at its default or ``None``).
    shots : int or sequence of int, default=None
        Training images per class instead of fractions.
    n_repeats : int, default=10
        Draws per setting.
    scoring : str, callable or None, default=None
        A scikit-learn scoring. ``None``: ``"roc_auc"`` for two classes (the paper's
        metric) and ``"accuracy"`` otherwise (see :func:`default_scoring`).
    test_index : array-like, default=None
        A fixed test set (see :class:`FewShotSplit`).
    groups : array-like, default=None
        Group labels (e.g. patients) kept apart between training and test.
    random_state : int, RandomState or None, default=0
        Seed of the draws. ``None`` draws one seed, shared by all methods and settings.
    n_jobs : int or None, default=None
        Parallel fits (see :func:`~sklearn.model_selection.cross_validate`).
    name : str, optional
        Row name of a single estimator (default: its class name, or the last step's).

    Returns
    -------
    FewShotReport

    Raises
    ------
    ValueError
        For an impossible setting (see :class:`FewShotSplit`). A failing fit raises (no
        silent NaN scores).

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.fewshot.probes import few_shot_report, make_linear_probe
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))]
    >>> y = np.r_[[0] * 20, [1] * 20]
    >>> report = few_shot_report(make_linear_probe(), X, y, fractions=(0.1, 0.5), n_repeats=3, name="linear")
    >>> report.columns
    ('10%', '50%')
    """
    settings = _settings(fractions, shots)
    if isinstance(estimator, Mapping):
        if not estimator:
            raise ValueError("estimator mapping is empty")
        methods = {str(k): v for k, v in estimator.items()}
    else:
        methods = {name or _default_name(estimator): estimator}
    if scoring is None:
        scoring = default_scoring(y)
    seed = random_state
    if not isinstance(seed, Integral):
        seed = draw_seed(random_state)
    scores: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    n_train: dict[str, float] = {}
    for label, kw in settings:
        cv = FewShotSplit(n_repeats=n_repeats, test_index=test_index, random_state=seed, **kw)
        for m, est in methods.items():
            logger.info("few-shot %s: %s", m, label)
            res = cross_validate(
                est,
                X,
                y,
                groups=groups,
                cv=cv,
                scoring=scoring,
                n_jobs=n_jobs,
                error_score="raise",
                return_indices=True,
            )
            scores[m][label] = np.asarray(res["test_score"], dtype=float)
            n_train[label] = float(np.mean([len(t) for t in res["indices"]["train"]]))
    return FewShotReport(scores, n_train, scoring if isinstance(scoring, str) else repr(scoring))


def _default_name(estimator: Any) -> str:
    if isinstance(estimator, Pipeline):
        return " + ".join(type(step).__name__ for _, step in estimator.steps if step not in (None, "passthrough"))
    return type(estimator).__name__


def _check_embeddings(embeddings: Any) -> np.ndarray:
    E = np.asarray(embeddings, dtype=np.float64)
    if E.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (n_samples, n_features), got shape {E.shape}")
    bad = ~np.isfinite(E).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} embedding row(s) contain NaN/inf (e.g. rows {np.flatnonzero(bad)[:5].tolist()}; "
            "skipped images?): drop them and their labels first"
        )
    return E


def knn_probe(
    embeddings: Any,
    y: Any,
    fractions: Sequence[float] | None = DEFAULT_FRACTIONS,
    *,
    shots: Sequence[int] | int | None = None,
    n_neighbors: int = 5,
    n_repeats: int = 10,
    scoring: Any = None,
    test_index: Any = None,
    groups: Any = None,
    random_state: Any = 0,
    n_jobs: int | None = None,
    name: str | None = None,
) -> FewShotReport:
    """Few-shot cosine kNN probe on precomputed embeddings (see :func:`few_shot_report`).

    The row is named ``"kNN (k=<n_neighbors>)"`` unless ``name`` is given.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> E, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> E[y == 1] += 2
    >>> report = knn_probe(E, y, fractions=[0.5], n_repeats=2)
    >>> report.scoring, report.mean()
    ('roc_auc', {'kNN (k=5)': {'50%': 0.935}})
    """
    E = _check_embeddings(embeddings)
    return few_shot_report(
        make_knn_probe(n_neighbors),
        E,
        y,
        fractions,
        shots=shots,
        n_repeats=n_repeats,
        scoring=scoring,
        test_index=test_index,
        groups=groups,
        random_state=random_state,
        n_jobs=n_jobs,
        name=name or f"kNN (k={n_neighbors})",
    )


def linear_probe(
    embeddings: Any,
    y: Any,
    fractions: Sequence[float] | None = DEFAULT_FRACTIONS,
    *,
    shots: Sequence[int] | int | None = None,
    C: float = 1.0,
    n_repeats: int = 10,
    scoring: Any = None,
    test_index: Any = None,
    groups: Any = None,
    random_state: Any = 0,
    n_jobs: int | None = None,
    name: str | None = None,
) -> FewShotReport:
    """Few-shot linear probe (standardised logistic regression) on precomputed embeddings.

    The row is named ``"linear"`` unless ``name`` is given (see :func:`few_shot_report`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> E, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> E[y == 1] += 2
    >>> report = linear_probe(E, y, fractions=[0.5], n_repeats=3)
    >>> report.mean()["linear"]["50%"] > 0.9
    True
    """
    E = _check_embeddings(embeddings)
    return few_shot_report(
        make_linear_probe(C),
        E,
        y,
        fractions,
        shots=shots,
        n_repeats=n_repeats,
        scoring=scoring,
        test_index=test_index,
        groups=groups,
        random_state=random_state,
        n_jobs=n_jobs,
        name=name or "linear",
    )
