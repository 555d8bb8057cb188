"""The segmentation trainer beside :class:`~codafeat._train.loop.CodaTrainer`.

:class:`SegTrainer` holds a U-Net, its AdamW optimiser (decoder and encoder groups with
their own peak learning rates, one warm-up + cosine schedule), the loss and the device
policy, and runs epochs and evaluations; :func:`fit_segmentation` runs the epochs with the
history, the progress bar and early stopping. Everything arrives as explicit arguments;
nothing here knows the estimator.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._device import DevicePolicy
from ..losses.segmentation import segmentation_loss
from ..metrics import iou
from ..nn.unet import UNet
from .schedules import cosine_schedule

logger = logging.getLogger(__name__)


class SegTrainer:
    """Optimiser, schedule and steps of a :class:`~codafeat.nn.unet.UNet` fine-tuning.

    Parameters
    ----------
    model : UNet
        The network, already placed by ``policy``.
    n_classes : int
        Classes including the background (IoU over ``1 .. n_classes-1``).
    loss : str
        See :func:`~codafeat.losses.segmentation.segmentation_loss`.
    lr, encoder_lr : float
        Peak learning rates of the decoder and the encoder.
    weight_decay : float
        AdamW weight decay.
    freeze_encoder : bool
        Train the decoder only; the encoder stays as loaded, in eval mode.
    total_steps : int
        Length of the schedule: linear warm-up over the first 5 %, then cosine decay to
        1 % of the peak on the last step.
    policy : DevicePolicy
        Placement and autocast.
    augment : callable or None
        ``augment(x, y, generator=...) -> (x, y)`` applied to each training batch.
    generator : torch.Generator
        Batch order and augmentation.

    Examples
    --------
    >>> import torch
    >>> from codafeat._device import DevicePolicy
    >>> from codafeat.nn.unet import build_unet
    >>> model = build_unet("test_convnext", 2, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> trainer = SegTrainer(model, n_classes=2, loss="ce", lr=1e-3, encoder_lr=1e-4, weight_decay=0.0,
    ...                      freeze_encoder=False, total_steps=2, policy=DevicePolicy(torch.device("cpu")),
    ...                      augment=None, generator=torch.Generator().manual_seed(0))
    >>> images, masks = torch.rand(4, 1, 32, 32), torch.zeros(4, 32, 32, dtype=torch.uint8)
    >>> loss = trainer.train_epoch(images, masks, batch_size=2, epoch=1)
    >>> loss > 0, trainer.step_count
    (True, 2)
    """

    def __init__(
        self,
        model: UNet,
        *,
        n_classes: int,
        loss: str,
        lr: float,
        encoder_lr: float,
        weight_decay: float,
        freeze_encoder: bool,
        total_steps: int,
        policy: DevicePolicy,
        augment: Any,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.n_classes = int(n_classes)
        self.loss = loss
        self.freeze_encoder = bool(freeze_encoder)
        self.policy = policy
        self.augment = augment
        self.generator = generator
        warmup = total_steps // 20
        self.lr_factor = cosine_schedule(1.0, 0.01, total_steps, warmup_steps=warmup, warmup_start=1.0 / (warmup + 1))
        if self.freeze_encoder:
            model.encoder.requires_grad_(False)
        groups = [{"params": list(model.decoder.parameters()), "lr": float(lr), "base_lr": float(lr)}]
        if not self.freeze_encoder:
            groups.append({"params": list(model.encoder.parameters()), "lr": float(encoder_lr), "base_lr": float(encoder_lr)})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=float(weight_decay))
        self._trainable = [p for g in groups for p in g["params"]]
        self.step_count = 0

    @property
    def learning_rates(self) -> tuple[float, float]:
        """The current ``(decoder, encoder)`` learning rates (encoder 0 when frozen)."""
        groups = self.optimizer.param_groups
        return groups[0]["lr"], 0.0 if self.freeze_encoder else groups[1]["lr"]

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimiser step on a batch already on the device; returns the loss."""
        if self.augment is not None:
            x, y = self.augment(x, y, generator=self.generator)
        x = self.policy.batch(x)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * float(self.lr_factor[self.step_count])
        with self.policy.autocast():
            logits = self.model(x)
        loss = segmentation_loss(logits, y, self.loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch}, step {self.step_count}; lower lr / encoder_lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._trainable, max_norm=1.0)
        self.optimizer.step()
        self.step_count += 1
        return float(loss.detach())

    def train_epoch(self, images: torch.Tensor, masks: torch.Tensor, *, batch_size: int, epoch: int) -> float:
        """One pass in a random order; returns the mean training loss per image."""
        self.model.train()
        if self.freeze_encoder:
            self.model.encoder.eval()
        n = len(images)
        perm = torch.randperm(n, generator=self.generator)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            x = images[idx].to(self.policy.device, non_blocking=True)
            y = masks[idx].to(self.policy.device, non_blocking=True)
            total += self.step(x, y, epoch) * len(idx)
        return total / n

    def evaluate(self, images: torch.Tensor, masks: torch.Tensor, *, batch_size: int) -> tuple[float, float]:
        """``(mean loss, mean foreground IoU)`` on held-out images, in eval mode."""
        self.model.eval()
        losses, preds = [], []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = self.policy.batch(images[s : s + batch_size])
                y = masks[s : s + batch_size].to(self.policy.device)
                with self.policy.autocast():
                    logits = self.model(x)
                losses.append(float(segmentation_loss(logits, y, self.loss)) * len(x))
                preds.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        score = iou(masks.numpy(), np.concatenate(preds), labels=range(1, self.n_classes))
        return sum(losses) / len(images), float(score)


@dataclass
class EarlyStopping:
    """Keep the best validation IoU's weights; stop after ``patience`` epochs without gain."""

    patience: int
    min_delta: float = 1e-4
    best_score: float = -math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    stale: int = 0

    def update(self, score: float, epoch: int, model: torch.nn.Module) -> bool:
        """Record an epoch's score; ``True`` when training should stop."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            return False
        self.stale += 1
        return self.stale >= self.patience


def fit_segmentation(
    trainer: SegTrainer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    epochs: int,
    batch_size: int,
    early_stopping: EarlyStopping | None = None,
    progress: Any = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Run up to ``epochs`` epochs; returns the history and the kept epoch (early stopping).

    With ``early_stopping`` the best epoch's weights are restored at the end.
    """
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"epoch": epoch, "train_loss": trainer.train_epoch(*train, batch_size=batch_size, epoch=epoch)}
        rec["val_loss"], rec["val_iou"] = (
            trainer.evaluate(*val, batch_size=batch_size) if val is not None else (float("nan"), float("nan"))
        )
        rec["lr"], rec["encoder_lr"] = trainer.learning_rates
        rec["time_s"] = time.perf_counter() - t0
        history.append(rec)
        logger.debug("epoch %d: %s", epoch, rec)
        if progress is not None:
            progress.update(1)
            postfix = {"loss": f"{rec['train_loss']:.4f}"}
            if not math.isnan(rec["val_iou"]):
                postfix["val_iou"] = f"{rec['val_iou']:.3f}"
            progress.set_postfix(postfix)
        if early_stopping is not None and early_stopping.update(rec["val_iou"], epoch, trainer.model):
            logger.info("early stopping at epoch %d (best epoch %d)", epoch, early_stopping.best_epoch)
            break
    if early_stopping is None:
        return history, None
    if early_stopping.best_state is not None:
        trainer.model.load_state_dict(early_stopping.best_state)
    return history, early_stopping.best_epoch
