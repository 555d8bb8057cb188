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
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import cross_validate
from sklearn.model_selection._split import BaseCrossValidator, GroupsConsumerMixin
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state, indexable
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _num_samples, check_is_fitted, validate_data

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


# =========================================================================== splitter
class FewShotSplit(GroupsConsumerMixin, BaseCrossValidator):
    """Repeated stratified few-shot train/test splits.

    Each of the ``n_repeats`` splits draws a training set that holds either ``n_shots``
    images of every class or a ``fraction`` of the data (stratified, at least one image per
    class). The test set is every other image, or the fixed ``test_index`` when given (the
    training images are then drawn from the images outside it, and ``fraction`` is a fraction
    of those). Use it wherever scikit-learn accepts ``cv=``.

    Parameters
    ----------
    n_shots : int or None, default=None
        Training images per class. Exactly one of ``n_shots`` and ``fraction`` must be set.
    fraction : float in (0, 1) or None, default=None
        Fraction of the (non-test) images to train on. The count is
        ``round(fraction * n_candidates)`` split over the classes in proportion to their
        sizes (largest remainders), then raised to at least one image per class; a fraction
        that rounds to zero images is an error.
    n_repeats : int, default=10
        Number of splits.
    test_index : array-like of int or bool, or None, default=None
        A fixed test set (indices, or a boolean mask over the samples). ``None`` tests on
        all images not drawn for training.
    random_state : int, RandomState instance or None, default=None
        Controls the draws. An int gives the same splits on every call of :meth:`split`.

    Notes
    -----
    ``groups`` (e.g. patient ids), when passed to :meth:`split`, keep training and test
    images of one group apart: without ``test_index`` the images that share a group with a
    training image are left out of the test set; with ``test_index`` the training images are
    drawn only from groups that have no image in the test set.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.probes import FewShotSplit
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> cv = FewShotSplit(n_shots=1, n_repeats=2, random_state=0)
    >>> [(len(tr), len(te)) for tr, te in cv.split(np.zeros((6, 2)), y)]
    [(2, 4), (2, 4)]
    """

    def __init__(
        self,
        n_shots: int | None = None,
        fraction: float | None = None,
        n_repeats: int = 10,
        test_index: Any = None,
        random_state: Any = None,
    ) -> None:
        if (n_shots is None) == (fraction is None):
            raise ValueError(
                "FewShotSplit needs exactly one of n_shots (images per class) and fraction "
                f"(of the data); got n_shots={n_shots!r}, fraction={fraction!r}"
            )
        if n_shots is not None and (
            not isinstance(n_shots, Integral) or isinstance(n_shots, bool) or n_shots < 1
        ):
            raise ValueError(f"n_shots must be an integer >= 1, got {n_shots!r}")
        if fraction is not None and (
            not isinstance(fraction, Real) or isinstance(fraction, bool) or not 0.0 < float(fraction) < 1.0
        ):
            raise ValueError(f"fraction must be a number strictly between 0 and 1, got {fraction!r}")
        if not isinstance(n_repeats, Integral) or isinstance(n_repeats, bool) or n_repeats < 1:
            raise ValueError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
        self.n_shots = n_shots
        self.fraction = fraction
        self.n_repeats = n_repeats
        self.test_index = test_index
        self.random_state = random_state

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of splits, ``n_repeats``."""
        return int(self.n_repeats)

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Generate ``(train, test)`` index arrays, ``n_repeats`` times.

        Parameters
        ----------
        X : array-like or sequence of length n_samples
            Only its length is used.
        y : array-like of shape (n_samples,)
            Class labels (required: the draw is stratified).
        groups : array-like of shape (n_samples,), default=None
            Optional group labels (see the class Notes).

        Yields
        ------
        train, test : ndarray of int
            Sorted sample indices.

        Raises
        ------
        ValueError
            If ``y`` is missing, a class has fewer images than ``n_shots``, ``fraction``
            gives no image, or ``test_index`` is invalid.
        """
        if y is None:
            raise ValueError("FewShotSplit.split needs the class labels y (the draw is stratified)")
        X, y, groups = indexable(X, y, groups)
        n = _num_samples(X)
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"FewShotSplit needs 1-d class labels y, got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)} labels")
        groups_arr = None if groups is None else np.asarray(groups)
        if groups_arr is not None and len(groups_arr) != n:
            raise ValueError(f"X has {n} samples but groups has {len(groups_arr)} entries")
        classes, y_idx = np.unique(y, return_inverse=True)

        test_fixed = self._fixed_test(n)
        if test_fixed is None:
            candidates = np.arange(n)
        else:
            outside = np.ones(n, dtype=bool)
            outside[test_fixed] = False
            if groups_arr is not None:
                outside &= ~np.isin(groups_arr, groups_arr[test_fixed])
            candidates = np.flatnonzero(outside)
            if candidates.size == 0:
                raise ValueError("test_index leaves no image (or no group) to train on")
            missing = sorted(set(classes.tolist()) - set(y[candidates].tolist()))
            if missing:
                raise ValueError(
                    f"class(es) {missing[:5]} have no image outside test_index"
                    + (" (and its groups)" if groups_arr is not None else "")
                    + ": nothing to train on for them"
                )
        class_names = classes.tolist()
        cand_classes = np.unique(y_idx[candidates])
        per_class = [candidates[y_idx[candidates] == c] for c in cand_classes]
        counts = np.array([len(p) for p in per_class])
        take = self._counts(counts, [class_names[c] for c in cand_classes])
        if test_fixed is None:
            short = [class_names[c] for c, k, m in zip(cand_classes, take, counts) if k >= m]
            if short:
                logger.warning(
                    "FewShotSplit: class(es) %s have all their images in the training set, none in the test set",
                    short[:5],
                )

        rng = check_random_state(self.random_state)
        for _ in range(self.n_repeats):
            train = np.sort(np.concatenate([rng.permutation(p)[:k] for p, k in zip(per_class, take)]))
            if test_fixed is not None:
                test = test_fixed
            else:
                mask = np.ones(n, dtype=bool)
                mask[train] = False
                if groups_arr is not None:
                    mask &= ~np.isin(groups_arr, groups_arr[train])
                test = np.flatnonzero(mask)
                if test.size == 0:
                    raise ValueError(
                        "FewShotSplit drew a training set that leaves no test image; use fewer "
                        "shots, a smaller fraction, or a fixed test_index"
                    )
            yield train, test

    # ------------------------------------------------------------------ helpers
    def _fixed_test(self, n: int) -> np.ndarray | None:
        if self.test_index is None:
            return None
        t = np.asarray(self.test_index)
        if t.dtype == bool:
            if t.shape != (n,):
                raise ValueError(f"a boolean test_index must have shape ({n},), got {t.shape}")
            t = np.flatnonzero(t)
        else:
            if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):
                raise ValueError("test_index must be a 1-d array of integer indices or a boolean mask")
            if t.size and (t.min() < -n or t.max() >= n):
                raise ValueError(f"test_index holds indices outside [0, {n}) (the number of samples)")
            t = np.unique(np.where(t < 0, t + n, t)).astype(np.intp)
        if t.size == 0:
            raise ValueError("test_index is empty")
        return t

    def _counts(self, counts: np.ndarray, names: Sequence[Any]) -> np.ndarray:
        """Training images per class."""
        if self.n_shots is not None:
            k = int(self.n_shots)
            bad = [(nm, int(c)) for nm, c in zip(names, counts) if c < k]
            if bad:
                listed = ", ".join(f"{nm!r}: {c}" for nm, c in bad[:5])
                raise ValueError(
                    f"n_shots={k} is more than the images available in class(es) {listed}"
                    + (" (outside test_index)" if self.test_index is not None else "")
                )
            return np.full(len(counts), k)
        total_n = int(counts.sum())
        total = int(math.floor(float(self.fraction) * total_n + 0.5))
        if total == 0:
            raise ValueError(
                f"fraction={self.fraction} of {total_n} images gives 0 training images; use a "
                f"fraction of at least {0.5 / total_n:.3g} or n_shots"
            )
        quota = total * counts / total_n
        take = np.floor(quota).astype(int)
        rest = total - int(take.sum())
        if rest > 0:
            order = np.argsort(-(quota - take), kind="stable")
            take[order[:rest]] += 1
        return np.minimum(np.maximum(take, 1), counts)


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
    >>> from codafeat.probes import KNNProbe
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

    def fit(self, X: Any, y: Any) -> "KNNProbe":
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


# =========================================================================== report
@dataclass(frozen=True)
class FewShotReport:
    """Scores of one or more methods under a few-shot protocol (the layout of paper Table 1).

    Rows are methods, columns are data settings (a fraction such as ``"10%"`` or a shot
    count such as ``"5-shot"``). ``str(report)`` and :func:`format_table` render it as a
    markdown table of ``mean ± std``; :meth:`to_frame` gives a pandas DataFrame (needs
    pandas); :meth:`records` gives plain dictionaries.

    Attributes
    ----------
    scores : dict of str to dict of str to ndarray
        ``scores[method][column]``: the score of every repeat.
    n_train : dict of str to float
        Mean number of training images per column.
    scoring : str
        The scoring used (a scikit-learn scorer name, or the repr of a callable).
    """

    scores: dict[str, dict[str, np.ndarray]]
    n_train: dict[str, float]
    scoring: str
    columns: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.columns:
            object.__setattr__(self, "columns", tuple(self.n_train))

    @property
    def methods(self) -> tuple[str, ...]:
        """The row names."""
        return tuple(self.scores)

    def mean(self) -> dict[str, dict[str, float]]:
        """``mean()[method][column]``: the mean score over the repeats."""
        return {m: {c: float(np.mean(v)) for c, v in cols.items()} for m, cols in self.scores.items()}

    def std(self) -> dict[str, dict[str, float]]:
        """``std()[method][column]``: the standard deviation over repeats (``ddof=0``, as NumPy and GridSearchCV)."""
        return {m: {c: float(np.std(v)) for c, v in cols.items()} for m, cols in self.scores.items()}

    def records(self) -> list[dict[str, Any]]:
        """One dictionary per (method, column): method, setting, n_train, mean, std, scores."""
        mean, std = self.mean(), self.std()
        return [
            {
                "method": m,
                "setting": c,
                "n_train": self.n_train[c],
                "mean": mean[m][c],
                "std": std[m][c],
                "scores": self.scores[m][c].tolist(),
            }
            for m in self.methods
            for c in self.columns
        ]

    def to_frame(self):
        """A pandas DataFrame: index = methods, columns = (setting, "mean" | "std").

        Raises
        ------
        ImportError
            If pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("FewShotReport.to_frame needs pandas: pip install pandas") from exc
        mean, std = self.mean(), self.std()
        cols = pd.MultiIndex.from_product([list(self.columns), ["mean", "std"]], names=["setting", "stat"])
        rows = [[v for c in self.columns for v in (mean[m][c], std[m][c])] for m in self.methods]
        return pd.DataFrame(rows, index=pd.Index(list(self.methods), name="method"), columns=cols)

    def __add__(self, other: "FewShotReport") -> "FewShotReport":
        """Stack the rows of two reports with the same columns and scoring."""
        if not isinstance(other, FewShotReport):
            return NotImplemented
        if other.columns != self.columns or other.scoring != self.scoring:
            raise ValueError(
                "cannot combine few-shot reports with different settings or scoring: "
                f"{self.columns}/{self.scoring} vs {other.columns}/{other.scoring}"
            )
        clash = set(self.scores) & set(other.scores)
        if clash:
            raise ValueError(f"both reports have the method(s) {sorted(clash)}; rename one")
        return FewShotReport({**self.scores, **other.scores}, dict(self.n_train), self.scoring, self.columns)

    def __str__(self) -> str:
        return format_table(self)

    def _repr_markdown_(self) -> str:
        return format_table(self)


def format_table(report: FewShotReport, *, percent: bool | None = None, digits: int = 2) -> str:
    """Render a :class:`FewShotReport` as a markdown table of ``mean ± std`` (paper Table 1).

    Parameters
    ----------
    report : FewShotReport
        The scores.
    percent : bool or None, default=None
        Show scores x 100. ``None``: when every score lies in ``[0, 1]``.
    digits : int, default=2
        Decimals.

    Returns
    -------
    str
        The table; the header cell names the scoring, each column header the setting and
        the (mean) number of training images.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> E, y = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> E[y == 1] += 2
    >>> print(format_table(knn_probe(E, y, fractions=[0.5], n_repeats=2)))
    | Method (roc_auc %) | 50% (n=20) |
    |---|:-:|
    | kNN (k=5) | 93.50 ± 1.00 |
    """
    if percent is None:
        vals = np.concatenate([v for cols in report.scores.values() for v in cols.values()] or [np.zeros(0)])
        finite = vals[np.isfinite(vals)]
        percent = bool(finite.size) and bool(np.all((finite >= 0) & (finite <= 1)))
    scale = 100.0 if percent else 1.0
    mean, std = report.mean(), report.std()

    def n_label(n: float) -> str:
        return f"n={int(round(n))}" if abs(n - round(n)) < 1e-9 else f"n≈{n:.1f}"

    head = [f"Method ({report.scoring}{' %' if percent else ''})"] + [
        f"{c} ({n_label(report.n_train[c])})" for c in report.columns
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":-:"] * len(report.columns)) + "|"]
    for m in report.methods:
        cells = [f"{scale * mean[m][c]:.{digits}f} ± {scale * std[m][c]:.{digits}f}" for c in report.columns]
        lines.append("| " + " | ".join([m] + cells) + " |")
    return "\n".join(lines)


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
    >>> from codafeat.probes import few_shot_report, make_linear_probe
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
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
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
