"""Pickling of estimators holding torch modules (codafeat/_estimator/persist.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from codafeat import CodaEncoder, CodaSegmenter
from codafeat._estimator.persist import _bytes_key, device_after_unpickling
from codafeat.formats.weights import module_state_from_bytes


def test_modules_travel_as_safetensors_bytes_not_torch_pickles():
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
    state = enc.__getstate__()
    assert "model_" not in state and "device_" not in state
    tensors, config = module_state_from_bytes(state[_bytes_key("model_")])
    assert config == enc.config_ and all(k.startswith("backbone.") for k in tensors)
    assert b"torch._utils" not in pickle.dumps(enc), "no tensor may be pickled by torch"


def test_segmenter_round_trip_predicts_the_same():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 40, 40), np.uint8)
    masks[:, 10:30, 12:28] = 1
    images = (masks * 0.6 + 0.2 * rng.random((4, 40, 40))).astype(np.float32)
    seg = CodaSegmenter(
        backbone="test_convnext", image_size=32, epochs=1, validation_fraction=0, random_state=0, num_workers=0
    ).fit(images, masks)
    again = pickle.loads(pickle.dumps(seg))
    np.testing.assert_array_equal(again.predict_proba(images), seg.predict_proba(images))
    assert again.config_ == seg.config_ and again.device_ == torch.device("cpu")


def test_a_missing_device_falls_back_to_the_cpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert device_after_unpickling("cuda:0") == torch.device("cpu")
    assert "not available after unpickling" in caplog.text


def test_pretrainer_round_trip_keeps_student_teacher_and_encoder():
    from codafeat import CodaPretrainer, make_radiograph_phantoms

    X, organs = make_radiograph_phantoms(
        6, organs=("chest", "hand"), image_size=48, random_state=0, return_variants=False
    )
    pre = CodaPretrainer(
        backbone="test_convnext",
        image_size=32,
        local_size=32,
        n_local_crops=2,
        epochs=1,
        batch_size=8,
        head_out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        monitor_every=0,
        random_state=0,
    ).fit(X, organs)
    data = pickle.dumps(pre)
    assert b"torch._utils" not in data
    again = pickle.loads(data)
    for name in ("student_", "teacher_"):
        a, b = getattr(again, name).state_dict(), getattr(pre, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(again.transform(X[:2]), pre.transform(X[:2]))
