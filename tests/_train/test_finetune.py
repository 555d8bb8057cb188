"""FineTuneTrainer, fit_epochs and its callbacks EarlyStopping and EpochProgress (codafeat/_train/finetune.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codafeat._device import DevicePolicy
from codafeat._train.finetune import (
    EarlyStopping,
    EpochProgress,
    FineTuneTrainer,
    fit_epochs,
    warmup_cosine,
)
from codafeat._train.tasks import ClassificationTask, SegmentationTask
from codafeat.nn.linear_head import build_linear_head_net
from codafeat.nn.unet import build_unet

CPU = DevicePolicy(torch.device("cpu"))


def _trainer(total_steps=4, freeze=False, lr=1e-2, lp_steps=0):
    torch.manual_seed(0)
    model = build_unet("test_convnext", 2, mean=(0.5,) * 3, std=(0.5,) * 3, decoder_channels=(16, 16, 16, 8, 8))
    return FineTuneTrainer(
        model,
        encoder=model.encoder,
        task=SegmentationTask(2, "ce+dice"),
        lr=lr,
        encoder_lr=lr / 10,
        weight_decay=0.0,
        freeze_encoder=freeze,
        total_steps=total_steps,
        lp_steps=lp_steps,
        policy=CPU,
        augment=None,
        generator=torch.Generator().manual_seed(0),
    )


def _data(n=4):
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    masks[:, 8:24, 8:24] = 1
    return masks.unsqueeze(1).float() * 0.7 + 0.1, masks


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_step_follows_the_schedule_and_moves_only_trainable_weights():
    tr = _trainer(total_steps=20, freeze=True)
    enc_before = _state(tr.model.encoder)
    dec_before = [p.clone() for p in tr.model.decoder.parameters()]
    x, y = _data(2)
    loss = tr.step(x, y, epoch=1)
    assert math.isfinite(loss) and tr.step_count == 1
    # warm-up: the first step runs at 1 / (warmup + 1) of the peak (warmup = 20 // 20 = 1)
    assert tr.learning_rates == (pytest.approx(1e-2 / 2), 0.0)
    assert all(torch.equal(v, enc_before[k]) for k, v in tr.model.encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, tr.model.decoder.parameters()))


def test_lp_ft_freezes_the_encoder_then_trains_it_on_its_own_warm_up():
    tr = _trainer(total_steps=40, lp_steps=20)
    x, y = _data(2)
    before = _state(tr.model.encoder)
    for _ in range(20):
        tr.step(x, y, epoch=1)
        assert tr.learning_rates[1] == 0.0 and not tr.encoder_trainable
    assert all(torch.equal(v, before[k]) for k, v in tr.model.encoder.state_dict().items()), (
        "linear probe: encoder intact"
    )
    tr.step(x, y, epoch=2)
    assert tr.encoder_trainable
    # the encoder's schedule restarts: the first fine-tuning step is its warm-up's first (warmup = 20 // 20 = 1)
    assert tr.learning_rates[1] == pytest.approx(1e-3 / 2)
    assert any(not torch.equal(v, before[k]) for k, v in tr.model.encoder.state_dict().items())
    np.testing.assert_allclose(tr.encoder_lr_factor[20:], warmup_cosine(20))


def test_the_segmenter_schedule_is_unchanged_without_lp():
    """Without LP-FT the encoder follows the head's schedule, as the segmentation trainer always did."""
    tr = _trainer(total_steps=30)
    np.testing.assert_array_equal(tr.encoder_lr_factor, tr.lr_factor)


def test_non_finite_loss_stops_before_an_update():
    tr = _trainer()
    x, y = _data(2)
    before = [p.clone() for p in tr.model.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite"):
        tr.step(x * float("nan"), y, epoch=3)
    assert all(torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))


def test_training_lowers_the_loss_and_evaluation_scores_iou():
    tr = _trainer(total_steps=30)
    x, y = _data(4)
    history = fit_epochs(tr, (x, y), (x, y), epochs=15, batch_size=2)
    assert len(history) == 15
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    loss, score = tr.evaluate(x, y, batch_size=2)
    assert loss == pytest.approx(history[-1]["val_loss"]) and 0.0 <= score <= 1.0
    assert score == pytest.approx(history[-1]["val_iou"])


def test_classification_history_names_its_score_and_float16_images_train():
    torch.manual_seed(0)
    model = build_linear_head_net("test_convnext", 2, mean=(0.5,) * 3, std=(0.5,) * 3)
    tr = FineTuneTrainer(
        model,
        encoder=model.encoder,
        task=ClassificationTask(),
        lr=1e-2,
        encoder_lr=1e-3,
        weight_decay=0.0,
        freeze_encoder=False,
        total_steps=8,
        policy=CPU,
        augment=None,
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.rand(8, 1, 32, 32).half()
    y = torch.tensor([0, 1] * 4)
    history = fit_epochs(tr, (x, y), (x, y), epochs=2, batch_size=4)
    assert {"val_accuracy", "val_loss", "train_loss"} <= set(history[-1])
    assert 0.0 <= history[-1]["val_accuracy"] <= 1.0


def test_early_stopping_keeps_the_best_epoch():
    stop = EarlyStopping(patience=2)
    m = torch.nn.Linear(1, 1)
    assert stop.update(0.5, 1, m) is False
    with torch.no_grad():
        m.weight.fill_(7.0)
    assert stop.update(0.4, 2, m) is False
    assert stop.update(0.5, 3, m) is True  # no gain beyond min_delta for 2 epochs
    assert stop.best_epoch == 1 and float(stop.best_state["weight"]) != 7.0


class _Bar:
    def __init__(self):
        self.n, self.postfix, self.closed = 0, None, False

    def update(self, k):
        self.n += k

    def set_postfix(self, postfix):
        self.postfix = postfix

    def close(self):
        self.closed = True


def test_early_stopping_as_a_callback_stops_the_loop_and_restores_the_best_epoch(monkeypatch):
    tr = _trainer(total_steps=40)
    x, y = _data(2)
    scores = iter([0.3, 0.6, 0.5, 0.4, 0.2, 0.1, 0.0, 0.0])
    kept = {}

    def evaluate(images, targets, *, batch_size):
        score = next(scores)
        if score == 0.6:  # the best epoch: remember its weights
            kept.update(_state(tr.model))
        return 1.0 - score, score

    monkeypatch.setattr(tr, "evaluate", evaluate)
    stop, bar = EarlyStopping(patience=3), _Bar()
    history = fit_epochs(tr, (x, y), (x, y), epochs=8, batch_size=2, callbacks=[EpochProgress(bar), stop])
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5] and stop.best_epoch == 2
    final = tr.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in kept.items())
    assert bar.n == 5 and bar.closed and bar.postfix["val_iou"] == "0.200"


def test_the_progress_bar_is_closed_when_an_epoch_fails(monkeypatch):
    tr = _trainer(total_steps=4)
    x, y = _data(2)
    monkeypatch.setattr(tr, "train_epoch", lambda *a, **k: (_ for _ in ()).throw(FloatingPointError("nan")))
    bar, stop = _Bar(), EarlyStopping(patience=1)
    before = _state(tr.model)
    with pytest.raises(FloatingPointError):
        fit_epochs(tr, (x, y), None, epochs=2, batch_size=2, callbacks=[EpochProgress(bar), stop])
    assert bar.closed and bar.n == 0 and stop.best_state is None
    assert all(torch.equal(tr.model.state_dict()[k], v) for k, v in before.items())
