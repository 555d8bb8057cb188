"""The shared streaming inference loop (codafeat/_estimator/infer.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import codafeat._estimator.infer as infer
from codafeat import ImageReadError
from codafeat._device import DevicePolicy

CPU = DevicePolicy(torch.device("cpu"))


def _collect(items, size=8, **kw):
    seen = {}

    def apply(x, batch):
        failed = {f.index for f in batch.failures}
        for j, i in enumerate(batch.index.tolist()):
            if i not in failed:
                seen[i] = (
                    x[j].float().mean().item(),
                    None if batch.shapes is None else tuple(batch.shapes[j].tolist()),
                )

    kw = {"batch_size": 2, "num_workers": 0, "on_error": "raise", **kw}
    failures = infer.stream_batches(items, size, apply, policy=CPU, **kw)
    return seen, failures


def test_every_item_once_in_order_with_original_shapes():
    items = [np.full((10 + i, 20), 10 * i, np.uint8) for i in range(5)]
    seen, failures = _collect(items, with_shapes=True)
    assert failures == [] and sorted(seen) == list(range(5))
    for i in range(5):
        assert seen[i][0] == pytest.approx(10 * i)
        assert seen[i][1] == (10 + i, 20)


def test_unreadable_files_raise_or_are_returned(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(good)
    items = [str(good), str(tmp_path / "missing.png"), str(good)]
    with pytest.raises(ImageReadError, match="missing.png"):
        _collect(items)
    seen, failures = _collect(items, on_error="skip")
    assert sorted(seen) == [0, 2] and [f.index for f in failures] == [1]


def test_probe_times_the_first_batch_then_uses_workers(monkeypatch, tmp_path):
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(paths[-1])
    calls = []
    real = infer.make_loader

    def spy(*args, **kwargs):
        calls.append((kwargs["num_workers"], kwargs["start"], kwargs["stop"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "make_loader", spy)
    monkeypatch.setattr(infer, "resolve_workers", lambda *a: infer.PROBE)
    monkeypatch.setattr(infer, "workers_after_probe", lambda d, m: 1)
    seen, _ = _collect(paths, num_workers="auto")
    assert calls == [(0, 0, 2), (1, 2, None)]
    assert sorted(seen) == list(range(5))


def test_empty_input_runs_nothing():
    assert _collect([]) == ({}, [])


def test_warn_skipped_names_the_files():
    from codafeat.data.loader import Failure

    with pytest.warns(infer.SkippedImagesWarning, match="a.png: broken") as record:
        names = infer.warn_skipped([Failure(0, "a.png", "broken")], context="ctx", consequence="NaN rows")
    assert names == ["a.png"] and record[0].message.skipped == ["a.png"]
    import pickle

    again = pickle.loads(pickle.dumps(record[0].message))  # crosses joblib's process boundary intact
    assert again.skipped == ["a.png"] and str(again) == str(record[0].message)
    assert infer.warn_skipped([], context="ctx", consequence="x") == []


def test_forward_batches_applies_the_model_and_hands_float32_outputs_with_their_batch(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((12, 12), 40, np.uint8)).save(good)
    items = [str(good), str(tmp_path / "missing.png"), np.full((6, 6), 200, np.uint8)]
    calls, rows = [], {}

    def model(x):
        calls.append(x.dtype)
        return x.double().mean((1, 2, 3), keepdim=True)[:, :, 0]  # (n, 1) float64

    def collect(out, batch):
        assert out.dtype == torch.float32
        failed = {f.index for f in batch.failures}
        rows.update((i, float(out[j, 0])) for j, i in enumerate(batch.index.tolist()) if i not in failed)

    failures = infer.forward_batches(model, items, 8, collect, policy=CPU, batch_size=2, num_workers=0, on_error="skip")
    assert [f.index for f in failures] == [1] and sorted(rows) == [0, 2]
    assert rows[0] == pytest.approx(40) and rows[2] == pytest.approx(200) and len(calls) == 2
