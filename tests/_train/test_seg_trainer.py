"""SegTrainer, EarlyStopping and fit_segmentation (codafeat/_train/seg_trainer.py)."""

from __future__ import annotations

import math

import pytest
import torch

from codafeat._device import DevicePolicy
from codafeat._train.seg_trainer import EarlyStopping, SegTrainer, fit_segmentation
from codafeat.nn.unet import build_unet

CPU = DevicePolicy(torch.device("cpu"))


def _trainer(total_steps=4, freeze=False, lr=1e-2):
    torch.manual_seed(0)
    model = build_unet("test_convnext", 2, mean=(0.5,) * 3, std=(0.5,) * 3, decoder_channels=(16, 16, 16, 8, 8))
    return SegTrainer(model, n_classes=2, loss="ce+dice", lr=lr, encoder_lr=lr / 10, weight_decay=0.0,
                      freeze_encoder=freeze, total_steps=total_steps, policy=CPU, augment=None,
                      generator=torch.Generator().manual_seed(0))


def _data(n=4):
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    masks[:, 8:24, 8:24] = 1
    return masks.unsqueeze(1).float() * 0.7 + 0.1, masks


def test_step_follows_the_schedule_and_moves_only_trainable_weights():
    tr = _trainer(total_steps=20, freeze=True)
    enc_before = {k: v.clone() for k, v in tr.model.encoder.state_dict().items()}
    dec_before = [p.clone() for p in tr.model.decoder.parameters()]
    x, y = _data(2)
    loss = tr.step(x, y, epoch=1)
    assert math.isfinite(loss) and tr.step_count == 1
    # warm-up: the first step runs at 1 / (warmup + 1) of the peak (warmup = 20 // 20 = 1)
    assert tr.learning_rates == (pytest.approx(1e-2 / 2), 0.0)
    assert all(torch.equal(v, enc_before[k]) for k, v in tr.model.encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, tr.model.decoder.parameters()))


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
    history, best = fit_segmentation(tr, (x, y), (x, y), epochs=15, batch_size=2)
    assert best is None and len(history) == 15
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    loss, score = tr.evaluate(x, y, batch_size=2)
    assert loss == pytest.approx(history[-1]["val_loss"]) and 0.0 <= score <= 1.0
    assert score == pytest.approx(history[-1]["val_iou"])


def test_early_stopping_keeps_the_best_epoch():
    stop = EarlyStopping(patience=2)
    m = torch.nn.Linear(1, 1)
    assert stop.update(0.5, 1, m) is False
    with torch.no_grad():
        m.weight.fill_(7.0)
    assert stop.update(0.4, 2, m) is False
    assert stop.update(0.5, 3, m) is True  # no gain beyond min_delta for 2 epochs
    assert stop.best_epoch == 1 and float(stop.best_state["weight"]) != 7.0
