"""CodaSegmenter (and its data pipeline: masks, pair resizing, joint augmentation)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from codafeat import CodaEncoder, Weights
from codafeat.metrics import iou
from codafeat.segment import CodaSegmenter

from helpers import shapes_dataset

TINY = dict(backbone="test_convnext", decoder_channels=(16, 16, 16, 8, 8))


def quick(**kw) -> CodaSegmenter:
    params = dict(
        TINY, image_size=32, epochs=1, batch_size=4, validation_fraction=0, augment=False, random_state=0, device="cpu"
    )
    params.update(kw)
    return CodaSegmenter(**params)


@pytest.fixture(scope="module")
def data():
    return shapes_dataset()


@pytest.fixture(scope="module")
def fitted(data):
    X, Y = data
    seg = CodaSegmenter(
        **TINY,
        image_size=48,
        epochs=40,
        batch_size=8,
        lr=1e-2,
        encoder_lr=1e-3,
        validation_fraction=0,
        augment=False,
        random_state=0,
        device="cpu",
    )
    return seg.fit(X, Y)


def _save_png(path: Path, arr: np.ndarray) -> str:
    Image.fromarray(arr).save(path)
    return str(path)


# --------------------------------------------------------------------------- learning
def test_overfits_small_shapes_dataset(fitted, data):
    X, Y = data
    score = fitted.score(X, Y)
    assert score > 0.9
    pred = fitted.predict(X)
    assert score == pytest.approx(iou(Y, pred, labels=[1]))
    losses = [h["train_loss"] for h in fitted.history_]
    assert losses[-1] < 0.5 * losses[0]


def test_predicts_at_each_original_size(fitted):
    # non-square images, shape in the upper-left: a transposed or mis-resized output fails
    imgs, masks = [], []
    for h, w, seed in [(40, 72, 1), (96, 64, 2), (48, 48, 3)]:
        x, y = shapes_dataset(2, h, w, seed=seed)
        imgs.append(x[0])
        masks.append(y[0])
    pred = fitted.predict(imgs)
    assert isinstance(pred, list) and [p.shape for p in pred] == [m.shape for m in masks]
    assert all(p.dtype == np.uint8 for p in pred)
    assert iou(masks, pred, labels=[1]) > 0.75
    proba = fitted.predict_proba(imgs)
    assert [p.shape for p in proba] == [(2, *m.shape) for m in masks]
    for p, m in zip(proba, pred):
        np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
        assert np.array_equal(p.argmax(0), m)


def test_same_sizes_give_arrays(fitted, data):
    X, _ = data
    pred = fitted.predict(X[:3])
    assert isinstance(pred, np.ndarray) and pred.shape == (3, 48, 48)
    proba = fitted.predict_proba(X[:3])
    assert proba.shape == (3, 2, 48, 48) and proba.dtype == np.float32


def test_pickle_and_joblib_round_trip_identical_predictions(fitted, data):
    X, _ = data
    ref = fitted.predict_proba(X)
    for copy in (pickle.loads(pickle.dumps(fitted)), _joblib_copy(fitted)):
        assert isinstance(copy.model_, torch.nn.Module)
        np.testing.assert_array_equal(copy.predict_proba(X), ref)
        np.testing.assert_array_equal(copy.predict(X), fitted.predict(X))
        np.testing.assert_equal(copy.history_, fitted.history_)  # NaN-aware
    state = fitted.__getstate__()
    assert "model_" not in state and isinstance(state["_model_bytes"], bytes)


def _joblib_copy(obj):
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    buf.seek(0)
    return joblib.load(buf)


def test_clone_and_params(fitted):
    c = clone(fitted)
    assert not hasattr(c, "model_")
    assert c.get_params() == fitted.get_params()


def test_same_random_state_same_result(data):
    X, Y = data
    a = quick(epochs=2, augment=True, validation_fraction=0.25).fit(X, Y)
    b = quick(epochs=2, augment=True, validation_fraction=0.25).fit(X, Y)
    np.testing.assert_array_equal(a.predict_proba(X[:2]), b.predict_proba(X[:2]))
    assert [h["train_loss"] for h in a.history_] == [h["train_loss"] for h in b.history_]


def test_multiclass(data):
    X, Y = data
    Y3 = Y.copy()
    Y3[:, :, 24:] *= 2  # right half of each shape is class 2
    seg = quick(n_classes=3, epochs=2).fit(X, Y3)
    pred = seg.predict(X)
    assert pred.max() < 3
    assert seg.predict_proba(X[:1]).shape == (1, 3, 48, 48)
    assert 0 <= seg.score(X, Y3) <= 1
    assert seg.classes_.tolist() == [0, 1, 2]


def test_history_validation_and_early_stopping(data):
    X, Y = data
    seg = quick(epochs=3, validation_fraction=0.25).fit(X, Y)
    assert [h["epoch"] for h in seg.history_] == [1, 2, 3]
    assert seg.n_train_ == 6 and seg.n_val_ == 2
    for h in seg.history_:
        assert set(h) >= {"train_loss", "val_loss", "val_iou", "lr", "encoder_lr", "time_s"}
        assert np.isfinite(h["val_loss"]) and 0 <= h["val_iou"] <= 1
        assert h["encoder_lr"] == pytest.approx(h["lr"] / 10)
    assert seg.best_epoch_ is None
    es = quick(epochs=6, validation_fraction=0.25, early_stopping=True, n_iter_no_change=1).fit(X, Y)
    ious = [h["val_iou"] for h in es.history_]
    assert es.best_epoch_ == 1 + int(np.argmax(ious))
    assert len(ious) <= 6
    no_val = quick().fit(X, Y)
    assert np.isnan(no_val.history_[0]["val_iou"]) and no_val.n_val_ == 0


# --------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=3).fit()
    path = tmp_path_factory.mktemp("w") / "coda.safetensors"
    enc.save(path)
    return enc, path


def _encoder_matches(seg: CodaSegmenter, state: dict[str, torch.Tensor]) -> bool:
    own = seg.model_.encoder.state_dict()
    mapped = {k.replace("stem_", "stem.", 1).replace("stages_", "stages.", 1): v for k, v in own.items()}
    assert set(mapped) == {k for k in state if not k.startswith("head.")}
    return all(torch.equal(mapped[k].cpu(), state[k]) for k in mapped)


def test_weights_forms_and_frozen_encoder_stays_pretrained(pretrained, data, monkeypatch):
    enc, path = pretrained
    X, Y = data
    state = Weights.from_file(path).state_dict()
    import codafeat.formats.registry as R

    monkeypatch.setattr(R, "registered_path", lambda name: Path(path) if name == "my-coda" else None)
    for spec in (path, str(path), Weights.from_file(path), enc, "my-coda"):
        seg = quick(weights=spec, backbone=None, freeze_encoder=True, epochs=2).fit(X[:4], Y[:4])
        assert seg.config_["backbone"] == "test_convnext"
        assert seg.history_[-1]["encoder_lr"] == 0.0
        assert _encoder_matches(seg, state), spec
    # an unfitted CodaEncoder is fitted first
    seg = quick(weights=CodaEncoder(weights=path), backbone=None, freeze_encoder=True).fit(X[:4], Y[:4])
    assert _encoder_matches(seg, state)
    # without freezing, fine-tuning moves the encoder (so the check above can fail)
    moved = quick(weights=path, backbone=None, epochs=2, encoder_lr=1e-2).fit(X[:4], Y[:4])
    assert not _encoder_matches(moved, state)


def test_image_size_from_weights_and_backbone_contradiction(pretrained, data):
    _, path = pretrained
    X, Y = data
    seg = quick(weights=path, backbone=None, image_size=None).fit(X[:2], Y[:2])
    assert seg.image_size_ == 32
    with pytest.raises(ValueError, match="contradicts"):
        quick(weights=path, backbone="test_resnet").fit(X[:2], Y[:2])


# --------------------------------------------------------------------------- input and errors
def test_mask_files_0_255_and_image_files(tmp_path, data):
    X, Y = data
    img_paths, mask_paths = [], []
    for i in range(4):
        img_paths.append(_save_png(tmp_path / f"img{i}.png", (X[i] * 255).astype(np.uint8)))
        mask_paths.append(_save_png(tmp_path / f"img{i}_mask.png", Y[i] * 255))
    seg = quick().fit(img_paths, mask_paths)
    assert seg.predict(img_paths).shape == (4, 48, 48)
    assert 0 <= seg.score(img_paths, mask_paths) <= 1
    # 0/255 is only read as binary with n_classes=2
    with pytest.raises(ValueError, match=r"img0_mask.png.*\[255\].*n_classes=3.*0/255"):
        quick(n_classes=3).fit(img_paths, mask_paths)


def test_count_and_size_mismatch_name_the_pair(tmp_path, data):
    X, Y = data
    with pytest.raises(ValueError, match="8 image.*7 mask"):
        quick().fit(X, Y[:7])
    img = _save_png(tmp_path / "a.png", (X[0] * 255).astype(np.uint8))
    small = _save_png(tmp_path / "a_mask.png", Y[0][:40, :44] * 255)
    with pytest.raises(ValueError, match=r"a\.png is 48x48 but its mask .*a_mask\.png is 40x44"):
        quick().fit([img], [small])
    with pytest.raises(ValueError, match="index 1.* 48x48 .*index 1.* 48x40"):
        quick().fit(list(X[:2]), [Y[0], Y[1][:, :40]])


def test_label_errors_and_background_warning(data):
    X, Y = data
    bad = Y.copy()
    bad[3, 0, 0] = 2
    with pytest.raises(ValueError, match=r"index 3.*\[2\].*n_classes=2"):
        quick().fit(X, bad)
    neg = Y.astype(np.int16)
    neg[0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"\[-1\]"):
        quick().fit(X, neg)
    empty = Y.copy()
    empty[2] = 0
    with pytest.warns(UserWarning, match="1 of 8 training masks are all background"):
        quick().fit(X, empty)
    with pytest.warns(UserWarning, match="all training masks are all background"):
        quick().fit(X[:2], np.zeros((2, 48, 48), np.uint8))
    with pytest.warns(UserWarning, match=r"class\(es\) \[2\] never appear"):
        quick(n_classes=3).fit(X[:2], Y[:2])


def test_parameter_and_setup_errors(data):
    X, Y = data
    with pytest.raises(ValueError, match="early_stopping needs a validation set"):
        quick(early_stopping=True, validation_fraction=0.1).fit(X, Y)
    with pytest.raises(ValueError, match="needs masks"):
        quick().fit(X, None)
    with pytest.raises(ValueError, match="loss"):
        quick(loss="focal").fit(X, Y)
    with pytest.raises(ValueError, match="image_size"):
        quick(image_size=16).fit(X, Y)
    with pytest.raises(ValueError, match="unknown augment"):
        quick(augment={"flip": True}).fit(X, Y)


def test_on_error_skip_counts_and_reports(tmp_path, data):
    X, Y = data
    paths = [_save_png(tmp_path / f"i{i}.png", (X[i] * 255).astype(np.uint8)) for i in range(3)]
    missing = str(tmp_path / "gone.png")
    with pytest.raises(Exception, match="gone.png"):
        quick().fit(paths + [missing], list(Y[:4]))
    with pytest.warns(UserWarning, match="skipped 1 .*gone.png"):
        seg = quick(on_error="skip").fit(paths + [missing], list(Y[:4]))
    assert seg.skipped_ == [missing]
    with pytest.warns(UserWarning, match="skipped 1") as record:
        pred = seg.predict([paths[0], missing])
    assert pred[1] is None and pred[0].shape == (48, 48)
    assert record[0].message.skipped == [missing] and seg.skipped_ == [missing], "predict leaves fit's list alone"
    with (
        pytest.warns(UserWarning, match="skipped 1"),
        pytest.raises(ValueError, match="cannot score: 1 image.*gone.png"),
    ):
        seg.score([paths[0], missing], list(Y[:2]))


# --------------------------------------------------------------------------- masks
# --------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_jsrt_files_pair_and_predict_at_full_size(shared_data):
    root = shared_data / "jsrt"
    names = sorted(p.name for p in (root / "images").glob("*.png"))[:3]
    if len(names) < 3:
        pytest.skip("JSRT images not found")
    imgs = [str(root / "images" / n) for n in names]
    masks = [str(root / "masks" / "heart" / n) for n in names]  # 1024x1024 PNG, 0/255
    seg = quick(image_size=64).fit(imgs, masks)
    pred = seg.predict(imgs[:1])
    assert pred.shape == (1, 1024, 1024)
    assert 0 <= seg.score(imgs[:1], masks[:1]) <= 1
