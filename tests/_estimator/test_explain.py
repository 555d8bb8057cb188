"""Class activation maps (codafeat/_estimator/explain.py) through CodaClassifier.explain and CodaRegressor.explain."""

from __future__ import annotations

import numpy as np
import pytest

from codafeat import CodaClassifier, CodaRegressor

pytest.importorskip("pytorch_grad_cam")

SETTINGS = dict(
    backbone="test_convnext",
    image_size=64,
    batch_size=16,
    augment=False,
    device="cpu",
    num_workers=0,
    epochs=15,
    lr=3e-3,
    encoder_lr_factor=1.0,
    random_state=0,
)


def corner_task(n: int, seed: int, h: int = 80, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 has a bright square in the top-left corner; class 0 a fainter square somewhere in the middle."""
    rng = np.random.default_rng(seed)
    X = 0.35 + 0.08 * rng.standard_normal((n, h, w))
    y = np.arange(n) % 2
    for i in range(n):
        if y[i]:
            X[i, 4:24, 4:24] += 0.5
        else:
            r, c = rng.integers(30, 50), rng.integers(40, 70)
            X[i, r : r + 8, c : c + 8] += 0.2
    return np.clip(X, 0, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted():
    X, y = corner_task(48, 0)
    return CodaClassifier(**SETTINGS).fit(X, y)


def _quadrants(m: np.ndarray) -> list[float]:
    h, w = m.shape
    return [
        m[: h // 2, : w // 2].mean(),
        m[: h // 2, w // 2 :].mean(),
        m[h // 2 :, : w // 2].mean(),
        m[h // 2 :, w // 2 :].mean(),
    ]


def test_the_map_of_the_corner_class_peaks_in_that_corner_at_the_images_own_size(fitted):
    X, y = corner_task(8, 2)
    assert fitted.score(X, y) == 1.0
    maps = fitted.explain(X[y == 1])  # the predicted class: the corner's
    assert maps.shape == (4, 80, 96) and maps.dtype == np.float32 and maps.min() >= 0 and maps.max() <= 1
    for m in maps:
        q = _quadrants(m)
        assert int(np.argmax(q)) == 0 and q[0] > 2 * max(q[1:]), q
    for method in ("gradcam++", "layercam"):
        assert int(np.argmax(_quadrants(fitted.explain(X[1:2], method=method)[0]))) == 0, method


def test_targets_layers_and_sizes(fitted):
    X, y = corner_task(4, 3)
    same = fitted.explain(X, target=1)
    np.testing.assert_array_equal(same, fitted.explain(X, target=[1, 1, 1, 1]))
    finer = fitted.explain(X[:1], layer="encoder.backbone.stages.2")
    assert finer.shape == (1, 80, 96)
    mixed = fitted.explain([X[0], X[1][:60, :50]])
    assert isinstance(mixed, list) and [m.shape for m in mixed] == [(80, 96), (60, 50)]
    with pytest.raises(ValueError, match=r"target \['7'\] is not a class"):
        fitted.explain(X, target=7)
    with pytest.raises(ValueError, match="target has 2 label"):
        fitted.explain(X, target=[0, 1])
    with pytest.raises(ValueError, match="layer 'encoder.nothing' is not a module"):
        fitted.explain(X, layer="encoder.nothing")
    with pytest.raises(ValueError, match="method must be one of"):
        fitted.explain(X, method="saliency")


def test_a_regressors_map_follows_its_output():
    X, y = corner_task(32, 4)
    reg = CodaRegressor(**dict(SETTINGS, epochs=8)).fit(X, y * 10.0)
    maps = reg.explain(X[y == 1][:2])
    assert maps.shape == (2, 80, 96)
    with pytest.raises(ValueError, match=r"target must be an output index in \[0, 1\)"):
        reg.explain(X[:1], target=1)
