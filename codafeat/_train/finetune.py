"""The one fine-tuning trainer of codafeat: segmentation, classification and regression.

:class:`FineTuneTrainer` holds a network made of a pretrained ``encoder`` and a randomly
initialised rest (a U-Net decoder, a linear head), its AdamW optimiser (two parameter groups
with their own peak learning rates and schedules), the task (loss, what evaluation keeps of
each batch, the score; see :mod:`codafeat._train.tasks`) and the device policy; it runs
steps, epochs and evaluations. :func:`fit_epochs` runs the epochs with the history and
callbacks (the progress bar, early stopping; the idea the pretraining loop shares, see
:mod:`codafeat._train.callbacks`). Everything arrives as explicit arguments; nothing here
knows an estimator.

Schedules. The head's learning rate warms up linearly over the first 5 % of the steps, then
follows a cosine to 1 % of its peak on the last step. With ``lp_steps > 0`` (LP-FT: a linear
probe, then fine-tuning; Kumar et al. 2022) the encoder is frozen, in eval mode, for the
first ``lp_steps`` steps and then gets the same warm-up + cosine over the remaining steps;
otherwise it follows the head's schedule at its own peak.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._device import DevicePolicy
from .callbacks import Callback, Callbacks
from .schedules import cosine_schedule
from .tasks import Task

logger = logging.getLogger(__name__)


def warmup_cosine(total_steps: int) -> np.ndarray:
    """Learning-rate factors per step: linear warm-up over 5 %, cosine to 0.01 on the last step.

    Examples
    --------
    >>> f = warmup_cosine(40)
    >>> len(f), float(f.max()), round(float(f[-1]), 4)
    (40, 1.0, 0.01)
    """
    if total_steps <= 0:
        return np.zeros(0)
    warmup = total_steps // 20
    return cosine_schedule(1.0, 0.01, total_steps, warmup_steps=warmup, warmup_start=1.0 / (warmup + 1))


class FineTuneTrainer:
    """Optimiser, schedules and steps of a fine-tuning run.

    Parameters
    ----------
    model : nn.Module
        The network, already placed by ``policy``; ``model(x)`` gives the task's outputs.
    encoder : nn.Module
        The pretrained part of ``model`` (a submodule); every other parameter is the head's.
    task : Task
        Loss, evaluation and score (:mod:`codafeat._train.tasks`).
    lr, encoder_lr : float
        Peak learning rates of the head and the encoder.
    weight_decay : float
        AdamW weight decay.
    freeze_encoder : bool
        Train the head only; the encoder stays exactly as loaded, in eval mode.
    total_steps : int
        Optimiser steps of the whole run.
    lp_steps : int, default=0
        Steps with the encoder frozen before it is fine-tuned (LP-FT).
    policy : DevicePolicy
        Placement and autocast.
    augment : callable or None
        ``augment(x, y, generator=...) -> (x, y)`` applied to each training batch.
    generator : torch.Generator
        Batch order and augmentation.
    clip_grad : float, default=1.0
        Maximum gradient norm.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from codafeat._device import DevicePolicy
    >>> from codafeat._train.tasks import ClassificationTask
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 2))
    >>> trainer = FineTuneTrainer(model, encoder=model[1], task=ClassificationTask(), lr=1e-2,
    ...                           encoder_lr=1e-3, weight_decay=0.0, freeze_encoder=False, total_steps=4,
    ...                           lp_steps=2, policy=DevicePolicy(torch.device("cpu")), augment=None,
    ...                           generator=torch.Generator().manual_seed(0))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.tensor([0, 1] * 4)
    >>> loss = trainer.train_epoch(x, y, batch_size=4, epoch=1)  # 2 steps: the linear probe
    >>> trainer.step_count, trainer.encoder_trainable
    (2, False)
    >>> loss = trainer.train_epoch(x, y, batch_size=4, epoch=2)  # 2 steps: fine-tuning
    >>> trainer.encoder_trainable
    True
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        encoder: nn.Module,
        task: Task,
        lr: float,
        encoder_lr: float,
        weight_decay: float,
        freeze_encoder: bool,
        total_steps: int,
        lp_steps: int = 0,
        policy: DevicePolicy,
        augment: Any,
        generator: torch.Generator,
        clip_grad: float = 1.0,
    ) -> None:
        self.model, self.encoder, self.task = model, encoder, task
        self.freeze_encoder = bool(freeze_encoder)
        self.policy, self.augment, self.generator = policy, augment, generator
        self.clip_grad = float(clip_grad)
        self.lp_steps = total_steps if self.freeze_encoder else min(int(lp_steps), int(total_steps))
        self.lr_factor = warmup_cosine(total_steps)
        tail = warmup_cosine(total_steps - self.lp_steps)
        self.encoder_lr_factor = np.concatenate([np.zeros(self.lp_steps), tail])
        own = {id(p) for p in encoder.parameters()}
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in own], "lr": float(lr), "base_lr": float(lr)}
        ]
        if not self.freeze_encoder:
            groups.append({"params": list(encoder.parameters()), "lr": float(encoder_lr), "base_lr": float(encoder_lr)})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=float(weight_decay))
        self._trainable = [p for g in groups for p in g["params"]]
        self.step_count = 0
        self._set_encoder_trainable(self.lp_steps == 0)

    def _set_encoder_trainable(self, on: bool) -> None:
        self.encoder_trainable = bool(on)
        self.encoder.requires_grad_(self.encoder_trainable)

    @property
    def learning_rates(self) -> tuple[float, float]:
        """The current ``(head, encoder)`` learning rates (encoder 0 while frozen)."""
        groups = self.optimizer.param_groups
        return groups[0]["lr"], groups[1]["lr"] if len(groups) > 1 and self.encoder_trainable else 0.0

    def _train_mode(self) -> None:
        self.model.train()
        if not self.encoder_trainable:
            self.encoder.eval()

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimiser step on a batch already on the device; returns the loss."""
        if not (self.encoder_trainable or self.freeze_encoder) and self.step_count >= self.lp_steps:
            self._set_encoder_trainable(True)  # the linear probe is over: fine-tune everything
            self._train_mode()
        if self.augment is not None:
            x, y = self.augment(x, y, generator=self.generator)
        x = self.policy.batch(x)
        factors = (self.lr_factor[self.step_count], self.encoder_lr_factor[self.step_count])
        for g, f in zip(self.optimizer.param_groups, factors):
            g["lr"] = g["base_lr"] * float(f)
        with self.policy.autocast():
            out = self.model(x)
        loss = self.task.loss(out.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch}, step {self.step_count}; lower lr or the encoder's lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._trainable, max_norm=self.clip_grad)
        self.optimizer.step()
        self.step_count += 1
        return float(loss.detach())

    def train_epoch(self, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int, epoch: int) -> float:
        """One pass in a random order; returns the mean training loss per image.

        ``images`` may be stored in a compact dtype (float16): each batch is made float32.
        """
        self._train_mode()
        n = len(images)
        perm = torch.randperm(n, generator=self.generator)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            x = images[idx].to(self.policy.device, non_blocking=True).float()
            y = targets[idx].to(self.policy.device, non_blocking=True)
            total += self.step(x, y, epoch) * len(idx)
        return total / n

    def evaluate(self, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int) -> tuple[float, float]:
        """``(mean loss, task score)`` on held-out images, in eval mode."""
        self.model.eval()
        losses, kept = [], []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = self.policy.batch(images[s : s + batch_size].float())
                y = targets[s : s + batch_size].to(self.policy.device)
                with self.policy.autocast():
                    out = self.model(x).float()
                losses.append(float(self.task.loss(out, y)) * len(x))
                kept.append(self.task.keep(out).cpu())
        return sum(losses) / len(images), float(self.task.score(torch.cat(kept), targets))


class EarlyStopping(Callback):
    """Keep the best validation score's weights; stop after ``patience`` epochs without gain.

    As a callback of :func:`fit_epochs` it reads each record's ``val_<score>`` and, when
    training ends, puts the best epoch's weights back into the model.
    """

    def __init__(self, patience: int, min_delta: float = 1e-4) -> None:
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record an epoch's score; ``True`` when training should stop."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            return False
        self.stale += 1
        return self.stale >= self.patience

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: FineTuneTrainer) -> None:
        self.stop_training = self.update(history[-1]["val_" + trainer.task.score_name], epoch, trainer.model)
        if self.stop_training:
            logger.info("early stopping at epoch %d (best epoch %d)", epoch, self.best_epoch)

    def on_train_end(self, history: list[dict[str, Any]], trainer: FineTuneTrainer) -> None:
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class EpochProgress(Callback):
    """A tqdm bar over the epochs with the training loss and the validation score; closed at the end."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def after_epoch(self, epoch: int, history: list[dict[str, Any]], trainer: FineTuneTrainer) -> None:
        rec, key = history[-1], "val_" + trainer.task.score_name
        self.progress.update(1)
        postfix = {"loss": f"{rec['train_loss']:.4f}"}
        if not math.isnan(rec[key]):
            postfix[key] = f"{rec[key]:.3f}"
        self.progress.set_postfix(postfix)

    def close(self) -> None:
        self.progress.close()


def fit_epochs(
    trainer: FineTuneTrainer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    epochs: int,
    batch_size: int,
    callbacks: Sequence[Callback] = (),
) -> list[dict[str, Any]]:
    """Run up to ``epochs`` epochs with ``callbacks`` (:class:`EpochProgress`, :class:`EarlyStopping`); the history.

    Each history record has ``epoch``, ``train_loss``, ``val_loss``, ``val_<score>`` (the
    task's :attr:`~codafeat._train.tasks.Task.score_name`; NaN without validation images),
    ``lr``, ``encoder_lr`` and ``time_s``. A callback may end training early
    (:attr:`~codafeat._train.callbacks.Callback.stop_training`); :class:`EarlyStopping`
    restores the best epoch's weights at the end.
    """
    history: list[dict[str, Any]] = []
    key = "val_" + trainer.task.score_name
    cbs = Callbacks(callbacks)
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            rec: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": trainer.train_epoch(*train, batch_size=batch_size, epoch=epoch),
            }
            rec["val_loss"], rec[key] = (
                trainer.evaluate(*val, batch_size=batch_size) if val is not None else (float("nan"), float("nan"))
            )
            rec["lr"], rec["encoder_lr"] = trainer.learning_rates
            rec["time_s"] = time.perf_counter() - t0
            logger.debug("epoch %d: %s", epoch, rec)
            if cbs.end_epoch(epoch, rec, history, trainer):
                break
        cbs.end_training(history, trainer)
    finally:
        cbs.close()
    return history
