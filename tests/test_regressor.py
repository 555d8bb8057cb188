"""CodaRegressor: continuous targets on the shared fine-tuning machinery."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from codafeat import CodaRegressor

from helpers import FINE_TUNE
from helpers import FINE_TUNE_CHECKS as CHECKS
from helpers import FINE_TUNE_TINY as TINY


def brightness_task(n: int, seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean brightness is the target (in years, say: 20 + 60 * t)."""
    rng = np.random.default_rng(seed)
    t = rng.random(n)
    X = np.clip(0.1 + 0.6 * t[:, None, None] + 0.05 * rng.standard_normal((n, size, size)), 0, 1)
    return X.astype(np.float32), 20 + 60 * t


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_checks(check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check("CodaRegressor", CodaRegressor(**TINY))


@pytest.fixture(scope="module")
def fitted():
    X, y = brightness_task(48, 0)
    return CodaRegressor(**dict(FINE_TUNE, image_size=32, epochs=10)).fit(X, y)


def test_learns_in_the_targets_units(fitted):
    Xt, yt = brightness_task(32, 1)
    pred = fitted.predict(Xt)
    assert pred.shape == (32,) and fitted.score(Xt, yt) > 0.5
    assert 20 <= np.median(pred) <= 80  # standardised for training, original units out
    assert fitted.y_mean_.shape == (1,) and fitted.history_[-1]["train_loss"] < fitted.history_[0]["train_loss"]


def test_multiple_outputs_and_the_same_random_state():
    X, y = brightness_task(12, 2)
    Y = np.stack([y, -y, np.full_like(y, 3.0)], axis=1)  # a constant column keeps scale 1
    a = CodaRegressor(**dict(FINE_TUNE, image_size=32, epochs=1)).fit(X, Y)
    b = CodaRegressor(**dict(FINE_TUNE, image_size=32, epochs=1)).fit(X, Y)
    assert a.predict(X).shape == (12, 3) and a.y_scale_[2] == 1.0
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)).predict(X), a.predict(X))


def test_targets_that_cannot_be_trained_on_raise_clearly():
    X, y = brightness_task(4, 3)
    with pytest.raises(ValueError, match="NaN or infinite.*position\\(s\\) \\[1\\]"):
        CodaRegressor(**TINY).fit(X, np.array([1.0, np.nan, 2.0, 3.0]))
    with pytest.raises(ValueError, match="numeric"):
        CodaRegressor(**TINY).fit(X, np.array(["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="4 image"):
        CodaRegressor(**TINY).fit(X, y[:2])


def test_early_stopping_needs_two_validation_images_for_r2():
    """Issue 27, item 3: one validation image scored R² = NaN every epoch and stopped silently."""
    X, y = brightness_task(8, 3)
    reg = CodaRegressor(**dict(TINY, early_stopping=True, validation_fraction=0.1))
    with pytest.raises(ValueError, match=r"holds out 1, but the validation r2 needs at least 2"):
        reg.fit(X, y)
    reg.set_params(validation_fraction=0.25, epochs=2, n_iter_no_change=1).fit(X, y)
    assert reg.n_val_ == 2 and reg.best_epoch_ is not None and np.isfinite(reg.history_[0]["val_r2"])


def test_targets_near_the_float64_limit_train_and_predict_finite_values():
    X, y = brightness_task(8, 3)
    huge = 1e200 * (1 + y / np.abs(y).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a numpy overflow warning
        reg = CodaRegressor(**dict(TINY, epochs=1)).fit(X, huge)
        pred = reg.predict(X)
    assert np.isfinite(reg.y_mean_).all() and np.isfinite(reg.y_scale_).all() and np.isfinite(pred).all()
    assert np.all((pred > 0.5e200) & (pred < 3e200))
