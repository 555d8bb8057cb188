"""A fit that fails leaves the estimator as it was (issue 27, item 2; scikit-learn's rule).

For every estimator: fitted on one task, refitted on other data that fails half-way (an
unreadable image, or Ctrl-C during training), it predicts exactly as before and keeps every
attribute; an unfitted one stays unfitted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from codafeat import CodaClassifier, CodaEncoder, CodaPretrainer, CodaRegressor
from codafeat._train.finetune import FineTuneTrainer
from codafeat.data.io import ImageReadError
from codafeat.segment import CodaSegmenter

from helpers import FINE_TUNE_TINY, TINY_PRETRAIN, interrupt_at, make_organ_folder, shapes_dataset


def _images(n: int, seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size)).astype(np.float32)


def _files_with_one_broken(folder: Path, X: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(X):
        p = folder / f"{i}.png"
        Image.fromarray((x * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    Path(paths[-1]).write_bytes(b"not a png")
    return paths


def _interrupt_fine_tuning(monkeypatch) -> None:
    """Ctrl-C in the middle of the first training epoch of any fine-tuning estimator."""

    def step(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FineTuneTrainer, "step", step)


def _state(est) -> dict:
    """Every attribute, torch modules by their tensors (values compared, not identity)."""
    out = {}
    for k, v in vars(est).items():
        if isinstance(v, torch.nn.Module):
            out[k] = {n: t.detach().clone() for n, t in v.state_dict().items()}
        else:
            out[k] = v
    return out


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        if isinstance(a[k], dict) and a[k] and isinstance(next(iter(a[k].values())), torch.Tensor):
            assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k
        elif isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] is b[k] or a[k] == b[k], k


CLF = dict(FINE_TUNE_TINY, image_size=32, epochs=1, random_state=0)


@pytest.mark.parametrize("fault", ["unreadable image", "ctrl-c"])
def test_classifier_refit_that_fails_keeps_classes_and_network(tmp_path, monkeypatch, fault):
    X = _images(12, 0)
    clf = CodaClassifier(**CLF).fit(X, np.arange(12) % 2)
    before, proba = _state(clf), clf.predict_proba(X)
    X2, y2 = _images(12, 1), np.array(["a", "b", "c"] * 4)  # a new class set
    if fault == "unreadable image":
        with pytest.raises(ImageReadError):
            clf.fit(_files_with_one_broken(tmp_path / "new", X2), y2)
    else:
        _interrupt_fine_tuning(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X2, y2)
    _same(before, _state(clf))
    assert clf.classes_.tolist() == [0, 1]
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_regressor_refit_that_fails_keeps_its_target_scale(monkeypatch):
    X = _images(12, 0)
    reg = CodaRegressor(**CLF).fit(X, np.linspace(0, 1, 12))
    before, pred = _state(reg), reg.predict(X)
    _interrupt_fine_tuning(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        reg.fit(X, np.linspace(100, 500, 12))  # a new y_mean_ and y_scale_
    _same(before, _state(reg))
    np.testing.assert_array_equal(reg.predict(X), pred)


def test_segmenter_refit_that_fails_keeps_its_model(tmp_path, monkeypatch):
    X, Y = shapes_dataset(n=6, h=32, w=32)
    params = dict(backbone="test_convnext", decoder_channels=(16, 16, 16, 8, 8), image_size=32, epochs=1)
    seg = CodaSegmenter(**params, batch_size=4, validation_fraction=0, augment=False, random_state=0, device="cpu")
    seg.fit(X, Y)
    before, masks = _state(seg), seg.predict(X)
    Y3 = Y.copy()
    Y3[:, :3, :3] = 2  # a third class, and an unreadable image left out with on_error="skip"
    _interrupt_fine_tuning(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        seg.set_params(n_classes=3, on_error="skip").fit(_files_with_one_broken(tmp_path / "new", X), Y3)
    after = _state(seg)
    for param in ("n_classes", "on_error"):  # parameters the user set, not fitted state
        after.pop(param), before.pop(param)
    _same(before, after)
    assert all(np.array_equal(a, b) for a, b in zip(seg.predict(X), masks))


def test_encoder_refit_on_missing_weights_keeps_its_weights(tmp_path):
    X = _images(4, 0)
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, device="cpu").fit()
    before, Z = _state(enc), enc.transform(X)
    with pytest.raises(Exception, match="no_such"):
        enc.set_params(weights=str(tmp_path / "no_such.safetensors")).fit()
    after = _state(enc)
    assert after.pop("weights") != before.pop("weights")
    _same(before, after)
    np.testing.assert_array_equal(enc.transform(X), Z)


def test_pretrainer_refit_that_fails_keeps_its_encoder(tmp_path, monkeypatch):
    data = make_organ_folder(tmp_path / "organs", {"chest": 6, "hand": 6})
    pre = CodaPretrainer(**dict(TINY_PRETRAIN, epochs=1), device="cpu").fit(data)
    before = _state(pre)
    Z = pre.transform(data)
    interrupt_at(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        pre.fit(data)
    _same(before, _state(pre))
    np.testing.assert_array_equal(pre.transform(data), Z)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CodaClassifier(**CLF),
        lambda: CodaRegressor(**CLF),
    ],
    ids=["classifier", "regressor"],
)
def test_an_unfitted_estimator_stays_unfitted_after_a_failed_fit(monkeypatch, make):
    est = make()
    _interrupt_fine_tuning(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        est.fit(_images(8, 0), np.arange(8) % 2)
    assert not [k for k in vars(est) if k.endswith("_") and not k.startswith("__")], vars(est).keys()
    with pytest.raises(NotFittedError):
        est.predict(_images(2, 0))
