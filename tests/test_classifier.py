"""CodaClassifier: the paper's fine-tuning protocol as a scikit-learn classifier."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from codafeat import CodaClassifier, CodaEncoder, FewShotSplit
from codafeat.data.io import ImageReadError

from helpers import FINE_TUNE
from helpers import FINE_TUNE_CHECKS as CHECKS
from helpers import FINE_TUNE_TINY as TINY


def blob_task(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc in the top half (class 0) or the bottom half (class 1), anywhere across.

    Global average pooling of a translation-equivariant network nearly forgets *where* the
    disc is, so a linear probe on frozen random-init features is at chance; fine-tuning can
    learn position through the borders (zero padding).
    """
    rng = np.random.default_rng(seed)
    X = 0.3 + 0.1 * rng.standard_normal((n, size, size))
    y = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = int(rng.integers(5, 9))
        cx = int(rng.integers(r + 2, size - r - 2))
        cy = int(rng.integers(r + 2, size // 2 - r)) + (size // 2 if y[i] else 0)
        X[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += rng.uniform(0.3, 0.6)
    return np.clip(X, 0, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def task():
    return blob_task(96, 0), blob_task(96, 1)


@pytest.fixture(scope="module")
def fitted(task):
    (X, y), _ = task
    return CodaClassifier(**FINE_TUNE).fit(X, y)


# --------------------------------------------------------------------------- sklearn checks
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_checks(check):
    # the checks that fit on generic 2-d data do not apply: X is images (the tags say so)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check("CodaClassifier", CodaClassifier(**TINY))


# --------------------------------------------------------------------------- the protocol
def test_gradients_reach_the_backbone_where_a_frozen_probe_fails(task, fitted):
    (X, y), (Xt, yt) = task
    enc = CodaEncoder(backbone="test_convnext", image_size=64, random_state=0, device="cpu", num_workers=0).fit()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(enc.transform(X), y)
    assert probe.score(enc.transform(Xt), yt) < 0.7, "the task must defeat a probe on frozen random features"
    frozen = CodaClassifier(**dict(FINE_TUNE, freeze_encoder=True)).fit(X, y)
    assert frozen.score(Xt, yt) < 0.7
    assert fitted.score(Xt, yt) >= 0.9


def test_freeze_encoder_leaves_the_backbone_bit_identical():
    X, y = blob_task(24, 9)
    enc = CodaEncoder(backbone="test_convnext", image_size=64, random_state=3, device="cpu").fit()
    clf = CodaClassifier(**dict(FINE_TUNE, weights=enc.get_weights(), freeze_encoder=True, epochs=2)).fit(X, y)
    before, after = enc.model_.backbone.state_dict(), clf.model_.encoder.backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.count_nonzero(clf.model_.head.weight) > 0, "the head did train"


def test_lp_ft_probes_first_then_fine_tunes():
    X, y = blob_task(24, 6)
    enc = CodaEncoder(backbone="test_convnext", image_size=64, random_state=3, device="cpu").fit()
    clf = CodaClassifier(**dict(FINE_TUNE, weights=enc, lp_epochs=2, epochs=4)).fit(X, y)
    assert [h["encoder_lr"] == 0 for h in clf.history_] == [True, True, False, False]
    after = clf.model_.encoder.backbone.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in enc.model_.backbone.state_dict().items())


def test_same_random_state_same_model():
    (X, y), Xt = blob_task(24, 7), blob_task(8, 8)[0]
    a = CodaClassifier(**dict(FINE_TUNE, epochs=2, augment=True)).fit(X, y).predict_proba(Xt)
    b = CodaClassifier(**dict(FINE_TUNE, epochs=2, augment=True)).fit(X, y).predict_proba(Xt)
    c = CodaClassifier(**dict(FINE_TUNE, epochs=2, augment=True, random_state=1)).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_predictions_are_consistent(fitted, task):
    _, (Xt, yt) = task
    proba, dec, pred = fitted.predict_proba(Xt), fitted.decision_function(Xt), fitted.predict(Xt)
    assert proba.shape == (len(Xt), 2) and np.allclose(proba.sum(1), 1, atol=1e-6)
    assert dec.shape == (len(Xt),)  # binary: positive minus negative logit, as scikit-learn's
    np.testing.assert_array_equal(pred, fitted.classes_[(dec > 0).astype(int)])
    assert get_scorer("roc_auc")(fitted, Xt, yt) > 0.9  # scikit-learn's scorers read decision_function


def test_string_labels_and_one_image_per_class():
    X, y = blob_task(2, 5)
    labels = np.array(["top", "bottom"])[y]
    clf = CodaClassifier(**dict(FINE_TUNE, epochs=1)).fit(X, labels)
    assert clf.classes_.tolist() == ["bottom", "top"]
    assert set(clf.predict(X)) <= {"top", "bottom"} and clf.n_train_ == 2


def test_multilabel_indicator_gives_sigmoid_outputs():
    X, y = blob_task(16, 2)
    Y = np.stack([y, (X.mean((1, 2)) > np.median(X.mean((1, 2)))).astype(int), np.zeros_like(y)], axis=1)
    clf = CodaClassifier(**dict(FINE_TUNE, epochs=2)).fit(X, Y)
    proba, pred = clf.predict_proba(X), clf.predict(X)
    assert clf.classes_.tolist() == [0, 1, 2] and proba.shape == pred.shape == (16, 3)
    assert ((0 <= proba) & (proba <= 1)).all() and not np.allclose(proba.sum(1), 1)
    assert set(np.unique(pred)) <= {0, 1}
    with pytest.raises(ValueError, match="single-label"):
        CodaClassifier(**dict(FINE_TUNE, class_weight="balanced")).fit(X, Y)


def test_class_weight_balanced_weighs_the_loss():
    X, y = blob_task(12, 3)
    y = np.r_[np.zeros(9, int), np.ones(3, int)]
    clf = CodaClassifier(**dict(FINE_TUNE, epochs=1, class_weight="balanced")).fit(X, y)
    np.testing.assert_allclose(clf._class_weight, [12 / (2 * 9), 12 / (2 * 3)], rtol=1e-6)
    assert not any(isinstance(v, torch.Tensor) for v in clf.__getstate__().values())  # pickles carry no tensor


def test_labels_that_cannot_be_trained_on_raise_clearly():
    X, y = blob_task(4, 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        CodaClassifier(**TINY).fit(X, np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        CodaClassifier(**TINY).fit(X, np.array([0.0, 1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="4 image"):
        CodaClassifier(**TINY).fit(X, y[:3])
    with pytest.raises(ValueError, match="Unknown label type|continuous"):
        CodaClassifier(**TINY).fit(X, np.array([0.1, 0.2, 0.3, 0.4]))


def test_early_stopping_holds_out_a_stratified_validation_set(task):
    (X, y), _ = task
    clf = CodaClassifier(**dict(FINE_TUNE, epochs=6, early_stopping=True, validation_fraction=0.25, n_iter_no_change=2))
    clf.fit(X, y)
    assert clf.n_val_ == 24 and clf.n_train_ == 72 and 1 <= clf.best_epoch_ <= clf.n_epochs_
    assert all(0 <= h["val_accuracy"] <= 1 for h in clf.history_)
    with pytest.raises(ValueError, match="stratified"):
        CodaClassifier(**dict(TINY, early_stopping=True)).fit(*blob_task(2, 0))


# --------------------------------------------------------------------------- files and errors
def _write(folder: Path, X: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(X):
        p = folder / f"{i:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_unreadable_images_raise_naming_them_or_are_skipped(tmp_path, fitted, task):
    (X, y), _ = task
    paths = _write(tmp_path / "imgs", X[:6])
    Path(paths[2]).write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="002.png"):
        fitted.predict(paths)
    skipper = clone(fitted).set_params(on_error="skip")
    skipper.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    before = {k: id(v) for k, v in vars(skipper).items()}
    with pytest.warns(UserWarning, match="002.png") as record:
        proba = skipper.predict_proba(paths)
    assert np.isnan(proba[2]).all() and not np.isnan(np.delete(proba, 2, axis=0)).any()
    assert record[0].message.skipped == [paths[2]]
    assert {k: id(v) for k, v in vars(skipper).items()} == before, "prediction only reads the estimator"
    pred = skipper.predict(paths)
    assert np.isnan(pred[2]) and pred.dtype.kind == "f"
    with pytest.warns(UserWarning, match="left out of training"):
        clf = CodaClassifier(**dict(FINE_TUNE, epochs=1, on_error="skip")).fit(paths, y[:6])
    assert clf.n_train_ == 5 and clf.skipped_ == [paths[2]]


def test_pipeline_fewshot_cv_gridsearch_clone_and_pickle(tmp_path, fitted, task):
    (X, y), (Xt, _) = task
    cv = FewShotSplit(n_shots=3, n_repeats=2, random_state=0)
    scores = cross_val_score(make_pipeline(CodaClassifier(**dict(FINE_TUNE, epochs=1))), X[:20], y[:20], cv=cv)
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    grid = GridSearchCV(CodaClassifier(**dict(FINE_TUNE, epochs=1)), {"lr": [1e-3, 3e-3]}, cv=cv).fit(X[:20], y[:20])
    assert grid.best_params_["lr"] in (1e-3, 3e-3)
    assert clone(fitted).get_params() == fitted.get_params() and not hasattr(clone(fitted), "model_")
    ref = fitted.predict_proba(Xt[:8])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict_proba(Xt[:8]), ref)
    joblib.dump(fitted, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(Xt[:8]), ref)


def test_the_fine_tuned_backbone_saves_as_codafeat_weights(tmp_path, fitted, task):
    _, (Xt, _) = task
    path = fitted.save(tmp_path / "ft.safetensors")
    enc = CodaEncoder(weights=str(path), normalize=False, device="cpu", num_workers=0).fit()
    with torch.inference_mode():
        ref = fitted.model_.encoder(torch.from_numpy(Xt[:4]).unsqueeze(1)).numpy()
    np.testing.assert_allclose(enc.transform(Xt[:4]), ref, rtol=1e-4, atol=1e-5)
    assert enc.config_["training"]["fine_tuned"]["estimator"] == "CodaClassifier"
    import timm
    from safetensors.torch import load_file

    net = timm.create_model("test_convnext", pretrained=False, num_classes=0)
    net.load_state_dict(load_file(str(path)), strict=True)  # a plain timm checkpoint


def test_class_weights_that_no_loss_can_train_with_are_refused_naming_class_weight():
    """Issue 27, item 8: weights summing to 0 failed later as a 'non-finite loss ... lower lr'."""
    X, y = blob_task(8, 5)
    for weights, bad in [({0: 1.0, 1: -1.0}, "class 1 the weight -1.0"), ({0: 0.0, 1: 0.0}, "class 0 the weight 0.0")]:
        with pytest.raises(ValueError, match=f"class_weight gives {bad}"):
            CodaClassifier(**dict(TINY, class_weight=weights)).fit(X, y)


def test_lp_epochs_must_leave_epochs_to_fine_tune_the_encoder():
    X, y = blob_task(8, 5)
    with pytest.raises(ValueError, match=r"lp_epochs=3 leaves no epoch of epochs=2 .*freeze_encoder=True"):
        CodaClassifier(**dict(TINY, epochs=2, lp_epochs=3)).fit(X, y)
    with pytest.raises(ValueError, match=r"lp_epochs=2 leaves no epoch"):
        CodaClassifier(**dict(TINY, epochs=2, lp_epochs=2)).fit(X, y)
    assert CodaClassifier(**dict(TINY, epochs=2, lp_epochs=2, freeze_encoder=True)).fit(X, y).n_epochs_ == 2


def test_save_replaces_weights_but_never_an_image_or_other_file(tmp_path, fitted, task):
    (X, y), _ = task
    image = tmp_path / "train_0.png"
    Image.fromarray((X[0] * 255).astype(np.uint8)).save(image)
    before = image.read_bytes()
    with pytest.raises(FileExistsError, match=r"train_0.png' exists and is not a safetensors weights file"):
        fitted.save(image)
    assert image.read_bytes() == before
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n")
    with pytest.raises(FileExistsError, match="labels.csv"):
        fitted.save(table)
    w = fitted.save(tmp_path / "w.safetensors")
    assert fitted.save(w) == w  # an earlier weights file is replaced
