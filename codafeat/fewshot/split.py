"""FewShotSplit: the paper's few-shot protocol (Table 1) as a scikit-learn CV splitter.

A stratified training set of ``n_shots`` images per class or a ``fraction`` of the data,
tested on the rest (or on a fixed test set), ``n_repeats`` times; pass it as ``cv=`` to
:func:`~sklearn.model_selection.cross_val_score`, :func:`~sklearn.model_selection.cross_validate`
or :class:`~sklearn.model_selection.GridSearchCV`. Also importable from :mod:`codafeat.fewshot.probes`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.model_selection._split import BaseCrossValidator, GroupsConsumerMixin
from sklearn.utils import check_random_state, indexable
from sklearn.utils.validation import _num_samples

logger = logging.getLogger(__name__)

__all__ = ["FewShotSplit"]


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
    >>> from codafeat.fewshot.probes import FewShotSplit
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
        if n_shots is not None and (not isinstance(n_shots, Integral) or isinstance(n_shots, bool) or n_shots < 1):
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
        candidates = self._candidates(n, y, classes, test_fixed, groups_arr)
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
    def _candidates(
        self, n: int, y: np.ndarray, classes: np.ndarray, test_fixed: np.ndarray | None, groups: np.ndarray | None
    ) -> np.ndarray:
        """The indices a training set may be drawn from: all, or those outside ``test_index`` (and its groups)."""
        if test_fixed is None:
            return np.arange(n)
        outside = np.ones(n, dtype=bool)
        outside[test_fixed] = False
        if groups is not None:
            outside &= ~np.isin(groups, groups[test_fixed])
        candidates = np.flatnonzero(outside)
        if candidates.size == 0:
            raise ValueError("test_index leaves no image (or no group) to train on")
        missing = sorted(set(classes.tolist()) - set(y[candidates].tolist()))
        if missing:
            raise ValueError(
                f"class(es) {missing[:5]} have no image outside test_index"
                + (" (and its groups)" if groups is not None else "")
                + ": nothing to train on for them"
            )
        return candidates

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
