"""The few-shot splitter, probes and report table (codafeat/fewshot/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from codafeat.fewshot.probes import (
    DEFAULT_FRACTIONS,
    FewShotReport,
    FewShotSplit,
    KNNProbe,
    default_scoring,
    few_shot_report,
    format_table,
    knn_probe,
    linear_probe,
    make_linear_probe,
)


def blobs(n_per_class=(12, 12, 12), dim=4, sep=4.0, seed=0):
    rng = np.random.RandomState(seed)
    X, y = [], []
    for c, n in enumerate(n_per_class):
        centre = np.zeros(dim)
        centre[c % dim] = sep
        X.append(rng.normal(centre, 1.0, (n, dim)))
        y += [c] * n
    return np.vstack(X), np.array(y)


# --------------------------------------------------------------------------- FewShotSplit
def test_n_shots_draws_k_per_class_and_tests_on_the_rest():
    X, y = blobs((5, 7, 9))
    cv = FewShotSplit(n_shots=2, n_repeats=4, random_state=0)
    splits = list(cv.split(X, y))
    assert len(splits) == cv.get_n_splits() == 4
    for train, test in splits:
        assert np.bincount(y[train]).tolist() == [2, 2, 2]
        assert np.intersect1d(train, test).size == 0
        assert np.array_equal(np.sort(np.r_[train, test]), np.arange(len(y)))
    # different repeats differ, an int seed repeats itself
    assert len({tuple(tr) for tr, _ in splits}) > 1
    again = list(cv.split(X, y))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))


def test_string_labels_and_list_input():
    y = np.array(["hand"] * 4 + ["chest"] * 3)
    X = [f"img{i}.png" for i in range(7)]
    train, test = next(FewShotSplit(n_shots=1, random_state=1).split(X, y))
    assert sorted(y[train].tolist()) == ["chest", "hand"]
    assert len(test) == 5


def test_fraction_is_stratified_with_at_least_one_per_class():
    X, y = blobs((100, 50, 3))
    train, _ = next(FewShotSplit(fraction=0.1, random_state=0).split(X, y))
    counts = np.bincount(y[train], minlength=3)
    # 10% of 153 = 15 images: quotas 9.8, 4.9, 0.2 -> 10, 5, 0 -> the rare class is raised to 1
    assert counts.tolist() == [10, 5, 1]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=6),
    fraction=st.floats(0.01, 0.99),
)
def test_fraction_counts_follow_the_quota(counts, fraction):
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    total = math.floor(fraction * n + 0.5)
    if total == 0:
        with pytest.raises(ValueError, match="fraction"):
            next(FewShotSplit(fraction=fraction).split(y, y))
        return
    # the total is the rounded fraction, plus at most the classes raised to one image
    raised = sum(1 for c in counts if total * c / n < 1)
    try:
        train, test = next(FewShotSplit(fraction=fraction, random_state=0).split(y, y))
    except ValueError as exc:  # e.g. counts [1, 1], fraction 0.99: every image would train
        assert "leaves no test image" in str(exc)
        assert n <= total + raised, "refused a draw that leaves test images"
        return
    got = np.bincount(y[train], minlength=len(counts))
    for c, k in zip(counts, got):
        quota = total * c / n
        assert 1 <= k <= c
        assert math.floor(quota) <= k <= max(1, math.ceil(quota))
    assert total <= got.sum() <= total + raised
    assert np.intersect1d(train, test).size == 0


def test_fixed_test_index_int_and_mask():
    X, y = blobs((10, 10))
    test_idx = np.r_[0:4, 10:14]
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    for t in (test_idx, mask, list(test_idx[::-1])):
        cv = FewShotSplit(fraction=0.5, n_repeats=3, test_index=t, random_state=0)
        for train, test in cv.split(X, y):
            assert np.array_equal(test, test_idx)
            assert np.intersect1d(train, test_idx).size == 0
            # 50% of the 12 non-test images, stratified
            assert np.bincount(y[train]).tolist() == [3, 3]


def test_groups_never_cross_train_and_test():
    X, y = blobs((12, 12))
    groups = np.arange(len(y)) // 2  # pairs of images from one "patient", same class
    for train, test in FewShotSplit(n_shots=3, n_repeats=5, random_state=0).split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
    test_idx = np.array([0, 12])
    for train, test in FewShotSplit(n_shots=2, test_index=test_idx, random_state=0).split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
        assert 1 not in train and 13 not in train  # the test images' partners


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of n_shots"),
        ({"n_shots": 2, "fraction": 0.1}, "exactly one of n_shots"),
        ({"n_shots": 0}, "n_shots"),
        ({"n_shots": 1.5}, "n_shots"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.0}, "fraction"),
        ({"fraction": -0.2}, "fraction"),
        ({"fraction": 0.1, "n_repeats": 0}, "n_repeats"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FewShotSplit(**kwargs)


def test_impossible_requests_raise_clear_errors():
    X, y = blobs((5, 3))
    with pytest.raises(ValueError, match=r"n_shots=4 is more than .* class\(es\) 1: 3"):
        next(FewShotSplit(n_shots=4).split(X, y))
    with pytest.raises(ValueError, match=r"fraction=0.05 of 8 images gives 0"):
        next(FewShotSplit(fraction=0.05).split(X, y))
    with pytest.raises(ValueError, match="needs the class labels"):
        next(FewShotSplit(n_shots=1).split(X))
    with pytest.raises(ValueError, match="no image outside test_index"):
        next(FewShotSplit(n_shots=1, test_index=np.arange(5, 8)).split(X, y))
    with pytest.raises(ValueError, match="outside"):
        next(FewShotSplit(n_shots=1, test_index=[0, 99]).split(X, y))
    with pytest.raises(ValueError, match="boolean test_index"):
        next(FewShotSplit(n_shots=1, test_index=np.ones(3, bool)).split(X, y))
    with pytest.raises(ValueError, match="n_shots=3 is more .*outside test_index"):
        next(FewShotSplit(n_shots=3, test_index=[5]).split(X, y))


def test_works_with_sklearn_model_selection():
    X, y = blobs((15, 15, 15))
    cv = FewShotSplit(n_shots=3, n_repeats=4, random_state=0)
    clf = LogisticRegression(max_iter=500)
    scores = cross_val_score(clf, X, y, cv=cv)
    assert scores.shape == (4,) and scores.min() > 0.8
    # reference: fit and score each split by hand
    ref = [accuracy_score(y[te], clone(clf).fit(X[tr], y[tr]).predict(X[te])) for tr, te in cv.split(X, y)]
    np.testing.assert_allclose(scores, ref)
    res = cross_validate(clf, X, y, cv=cv, return_indices=True)
    assert [len(t) for t in res["indices"]["train"]] == [9] * 4
    gs = GridSearchCV(clf, {"C": [0.01, 1.0]}, cv=FewShotSplit(fraction=0.2, n_repeats=3, random_state=0)).fit(X, y)
    assert gs.best_params_["C"] in (0.01, 1.0)
    assert len(gs.cv_results_["split2_test_score"]) == 2


def test_repr():
    assert "n_shots=5" in repr(FewShotSplit(n_shots=5))


# --------------------------------------------------------------------------- report
def test_few_shot_report_matches_manual_cross_validation():
    X, y = blobs((20, 20, 20), sep=2.0)
    est = LogisticRegression(max_iter=500)
    rep = few_shot_report(est, X, y, fractions=(0.1, 0.5), n_repeats=3, random_state=7)
    assert rep.methods == ("LogisticRegression",)
    assert rep.columns == ("10%", "50%")
    assert rep.scoring == "accuracy"  # three classes
    for label, frac in (("10%", 0.1), ("50%", 0.5)):
        cv = FewShotSplit(fraction=frac, n_repeats=3, random_state=7)
        ref = [accuracy_score(y[te], clone(est).fit(X[tr], y[tr]).predict(X[te])) for tr, te in cv.split(X, y)]
        np.testing.assert_allclose(rep.scores["LogisticRegression"][label], ref)
        assert rep.mean()["LogisticRegression"][label] == pytest.approx(np.mean(ref))
        assert rep.std()["LogisticRegression"][label] == pytest.approx(np.std(ref))
    assert rep.n_train == {"10%": 6.0, "50%": 30.0}


def test_binary_default_is_roc_auc():
    X, y = blobs((15, 15), sep=1.0)
    assert default_scoring(y) == "roc_auc"
    assert default_scoring(np.r_[y, 2]) == "accuracy"
    est = LogisticRegression(max_iter=500)
    rep = few_shot_report(est, X, y, shots=[2], n_repeats=3, random_state=3)
    assert rep.scoring == "roc_auc" and rep.columns == ("2-shot",)
    cv = FewShotSplit(n_shots=2, n_repeats=3, random_state=3)
    ref = [roc_auc_score(y[te], clone(est).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]) for tr, te in cv.split(X, y)]
    np.testing.assert_allclose(rep.scores["LogisticRegression"]["2-shot"], ref)


def test_methods_share_the_same_splits():
    X, y = blobs((10, 10, 10))
    rep = few_shot_report(
        {"a": LogisticRegression(max_iter=300), "b": LogisticRegression(max_iter=300)},
        X,
        y,
        fractions=(0.2,),
        n_repeats=4,
        random_state=None,
    )
    np.testing.assert_array_equal(rep.scores["a"]["20%"], rep.scores["b"]["20%"])


def test_report_errors():
    X, y = blobs()
    with pytest.raises(ValueError, match="either fractions or shots"):
        few_shot_report(LogisticRegression(), X, y, fractions=(0.5,), shots=[1])
    with pytest.raises(ValueError, match="n_shots=50"):
        few_shot_report(LogisticRegression(), X, y, shots=[50])
    with pytest.raises(ValueError, match="NaN"):
        knn_probe(np.full((36, 2), np.nan), y)


def test_format_table_layout_and_values():
    rep = FewShotReport(
        {
            "Coda": {"1%": np.array([0.8, 0.9]), "10%": np.array([0.95, 0.95])},
            "random": {"1%": np.array([0.5, 0.6]), "10%": np.array([0.7, 0.9])},
        },
        {"1%": 4.0, "10%": 40.0},
        "roc_auc",
    )
    text = format_table(rep)
    lines = text.splitlines()
    assert lines[0] == "| Method (roc_auc %) | 1% (n=4) | 10% (n=40) |"
    assert lines[2] == "| Coda | 85.00 ± 5.00 | 95.00 ± 0.00 |"
    assert lines[3] == "| random | 55.00 ± 5.00 | 80.00 ± 10.00 |"
    assert str(rep) == text
    raw = format_table(rep, percent=False, digits=3)
    assert "0.850 ± 0.050" in raw
    # scores outside [0, 1] are not shown as percent
    neg = FewShotReport({"m": {"5-shot": np.array([-2.0, -1.0])}}, {"5-shot": 10.5}, "neg_log_loss")
    assert "| m | -1.50 ± 0.50 |" in format_table(neg)
    assert "n≈10.5" in format_table(neg)
    recs = rep.records()
    assert recs[0] == {
        "method": "Coda",
        "setting": "1%",
        "n_train": 4.0,
        "mean": pytest.approx(0.85),
        "std": pytest.approx(0.05),
        "scores": [0.8, 0.9],
    }


def test_report_addition_and_frame():
    X, y = blobs()
    a = knn_probe(X, y, fractions=(0.2, 0.5), n_repeats=2)
    b = linear_probe(X, y, fractions=(0.2, 0.5), n_repeats=2)
    both = a + b
    assert both.methods == ("kNN (k=5)", "linear")
    with pytest.raises(ValueError, match="different settings"):
        a + linear_probe(X, y, fractions=(0.5,), n_repeats=2)
    with pytest.raises(ValueError, match="both reports"):
        a + a
    pd = pytest.importorskip("pandas")
    df = both.to_frame()
    assert isinstance(df, pd.DataFrame)
    assert df.loc["linear", ("50%", "mean")] == pytest.approx(both.mean()["linear"]["50%"])
    assert list(df.columns.get_level_values(0)) == ["20%", "20%", "50%", "50%"]


def test_default_fractions_are_the_papers():
    assert DEFAULT_FRACTIONS == (0.01, 0.1, 0.2, 0.5)
    X, y = blobs((100, 100))
    rep = linear_probe(X, y, n_repeats=1)
    assert rep.columns == ("1%", "10%", "20%", "50%")
    assert rep.n_train["1%"] == 2.0


# --------------------------------------------------------------------------- probes
def test_knn_probe_matches_sklearn_cosine_knn():
    X, y = blobs((10, 10, 10), sep=1.5)
    rep = knn_probe(X, y, shots=[5], n_neighbors=3, n_repeats=3, random_state=0)
    cv = FewShotSplit(n_shots=5, n_repeats=3, random_state=0)
    ref = []
    for tr, te in cv.split(X, y):
        knn = KNeighborsClassifier(n_neighbors=3, metric="cosine", weights="distance").fit(X[tr], y[tr])
        ref.append(accuracy_score(y[te], knn.predict(X[te])))
    np.testing.assert_allclose(rep.scores["kNN (k=3)"]["5-shot"], ref)


def test_knn_probe_clips_k_to_the_training_size():
    X, y = blobs((6, 6))
    probe = KNNProbe(n_neighbors=20).fit(X[[0, 6]], y[[0, 6]])
    assert probe.n_neighbors_ == 2
    assert probe.predict(X).shape == (12,)
    assert probe.predict_proba(X).shape == (12, 2)


def test_linear_probe_is_scaled_logistic_regression():
    pipe = make_linear_probe(C=0.5)
    assert [type(s).__name__ for s in pipe] == ["StandardScaler", "LogisticRegression"]
    assert pipe[-1].C == 0.5


@parametrize_with_checks([KNNProbe()])
def test_knn_probe_is_a_valid_sklearn_estimator(estimator, check):
    check(estimator)
