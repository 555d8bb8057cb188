"""The Coda training step and epoch loop (no data discovery, no estimator API: see pretrain.py).

One step, following the paper and DESIGN.md:

1. teacher(g2) -> inter-organ embeddings ``t_org`` and intra-organ logits ``t_ins``
   (one teacher forward feeds both heads; no gradients);
2. student(g1, local crops) -> ``s_org`` (g1) and ``s_ins`` (all crops batched together);
   with ``symmetric=True`` (DINO's form) both global views pass through both networks:
   the inter-organ term averages student(g1) vs teacher(g2) and student(g2) vs teacher(g1),
   and the intra-organ term pairs every student view (g1, g2, crops) with both teacher
   views except a global view with itself;
3. ``t_org`` and the organ labels are gathered over ranks, so negatives come from the
   global batch;
4. ``L = lambda_inter * L_inter + lambda_intra * L_intra (+ koleo_weight * L_koleo)``; a
   single-organ global batch has no negatives: its inter-organ term is skipped and counted
   in the history; the optional KoLeo term spreads the student's intra-organ bottleneck
   vectors of each global view (:class:`~codafeat.losses.KoLeoLoss`);
5. a non-finite loss raises :class:`FloatingPointError` before any update, so the last
   checkpoint stays the last good state;
6. backward, DINO's per-parameter gradient clipping, last layer frozen during the first
   ``freeze_last_layer`` epochs, AdamW step with scheduled lr and weight decay;
7. EMA update of the teacher (backbone and heads) with the scheduled momentum;
8. the intra-organ centre is updated from ``t_ins`` (all-reduced over ranks).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._device import DevicePolicy
from ..losses.inter_organ import InterOrganLoss
from ..losses.intra_organ import IntraOrganLoss
from ..losses.koleo import KoLeoLoss
from ..nn.coda_model import CodaNetwork
from ..nn.ema import ema_update
from . import dist as D

logger = logging.getLogger(__name__)


@dataclass
class Schedules:
    """Per-step learning rate, weight decay and EMA momentum; per-epoch teacher temperature."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray


@dataclass
class StepResult:
    loss: float
    loss_inter: float
    loss_intra: float
    inter_skipped: bool
    loss_koleo: float = 0.0


_LOSS_KEYS = ("loss", "loss_inter", "loss_intra", "loss_koleo")


@dataclass
class EpochStats:
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_LOSS_KEYS, 0.0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_LOSS_KEYS, 0))
    inter_skipped_steps: int = 0
    images: int = 0

    def add(
        self, r: StepResult, n_images: int, lambda_inter: float, lambda_intra: float, koleo_weight: float = 0.0
    ) -> None:
        self.sums["loss"] += r.loss
        self.counts["loss"] += 1
        if koleo_weight > 0:
            self.sums["loss_koleo"] += r.loss_koleo
            self.counts["loss_koleo"] += 1
        if lambda_inter > 0 and not r.inter_skipped:
            self.sums["loss_inter"] += r.loss_inter
            self.counts["loss_inter"] += 1
        if lambda_intra > 0:
            self.sums["loss_intra"] += r.loss_intra
            self.counts["loss_intra"] += 1
        self.inter_skipped_steps += int(r.inter_skipped)
        self.images += n_images

    def mean(self, key: str) -> float:
        return self.sums[key] / self.counts[key] if self.counts[key] else float("nan")


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups as in DINO: no weight decay on biases and normalisation (1-d) parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


@torch.no_grad()
def clip_gradients_(params: list[nn.Parameter], max_norm: float) -> None:
    """Clip each parameter's gradient norm to ``max_norm`` separately (DINO's ``clip_gradients``)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    norms = torch._foreach_norm(grads)
    coefs = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)


class CodaTrainer:
    """Holds student, teacher, losses and optimiser; runs steps and epochs.

    The student may be wrapped in DDP (``student``); ``student_module`` is always the bare
    :class:`~codafeat.nn.coda_model.CodaNetwork`.
    """

    def __init__(
        self,
        *,
        student: CodaNetwork,
        teacher: CodaNetwork,
        inter_loss: InterOrganLoss | None,
        intra_loss: IntraOrganLoss | None,
        lambda_inter: float,
        lambda_intra: float,
        schedules: Schedules,
        steps_per_epoch: int,
        clip_grad: float,
        freeze_last_layer: int,
        device: torch.device,
        dist_info: D.DistInfo,
        n_local_crops: int,
        symmetric: bool = False,
        accumulate_steps: int = 1,
        compile: bool | str = False,
        koleo_weight: float = 0.0,
    ) -> None:
        self.student_module = student
        self.koleo_weight = float(koleo_weight)
        self.koleo = KoLeoLoss() if self.koleo_weight > 0 else None
        self.accumulate_steps = int(accumulate_steps)
        self.symmetric = bool(symmetric)
        # Symmetric intra-organ pairs (DINO): student views [g1, g2, crops] x teacher views
        # [g1, g2], leaving out each global view paired with itself.
        self._pairs = torch.ones(n_local_crops + 2, 2, dtype=torch.bool)
        self._pairs[0, 0] = self._pairs[1, 1] = False
        self.teacher, self.inter_loss, self.intra_loss = teacher, inter_loss, intra_loss
        self.lambda_inter = float(lambda_inter)
        self.lambda_intra = float(lambda_intra)
        self.schedules = schedules
        self.steps_per_epoch = steps_per_epoch
        self.clip_grad = float(clip_grad)
        self.freeze_last_layer = int(freeze_last_layer)
        self.device = device
        self.dist = dist_info
        self.n_local_crops = n_local_crops
        self.policy = DevicePolicy(device)
        self.scaler = self.policy.grad_scaler()  # float16 GPUs only; a no-op otherwise
        self.student: nn.Module = student
        #: Extra fields shown on the progress bar (the last monitor figures).
        self.progress_extra: dict[str, str] = {}
        if dist_info.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.student = DDP(student, device_ids=ids, broadcast_buffers=False)
        self._teacher_forward: nn.Module = teacher
        if compile:
            # compiled callables; student_module and teacher stay the bare modules (EMA, checkpoints)
            kwargs = {"backend": compile} if isinstance(compile, str) else {}
            self.student = torch.compile(self.student, **kwargs)
            self._teacher_forward = torch.compile(teacher, **kwargs)
        self.optimizer = torch.optim.AdamW(param_groups(student), lr=float(schedules.lr[0]))
        self._params = [p for p in student.parameters() if p.requires_grad]
        self._last_layer = set(id(p) for p in student.last_layer_parameters())

    # ------------------------------------------------------------------ one step
    def _inter_term(self, s_org: torch.Tensor, t_org: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Inter-organ loss of student anchors against the global batch's teacher embeddings."""
        t_all = D.all_gather_cat(t_org.float().detach(), self.dist)
        y_all = D.all_gather_cat(labels, self.dist)
        mean_inter, n_anchors = self.inter_loss(s_org.float(), t_all, labels, y_all)
        # Weight by this rank's share of the global anchors, so that DDP's gradient
        # average equals the mean over all anchors of the global batch.
        n_local = torch.tensor(float(n_anchors), device=self.device)
        n_global = D.all_reduce_sum(n_local.clone(), self.dist)
        if n_global.item() == 0:
            return mean_inter * 0.0, True
        return mean_inter * (n_local * self.dist.world_size / n_global), False

    def forward(self, g1: torch.Tensor, g2: torch.Tensor, crops: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``(t_org, t_ins, s_org, s_ins, s_bottleneck)`` of a placed batch (steps 1-2 of the module doc).

        ``s_bottleneck`` (the student's intra-organ bottleneck of its global views) is
        ``None`` unless the KoLeo term is on.
        """
        policy = self.policy
        extra = {"return_bottleneck": True} if self.koleo is not None and self.lambda_intra > 0 else {}
        if self.symmetric:
            # DINO's form: both global views through both networks.
            both = torch.cat([g1, g2])
            with torch.no_grad(), policy.autocast():
                t_org, t_ins = self._teacher_forward(both)
            with policy.autocast():
                s_org, s_ins, *s_b = self.student(both, crops, ins_on_global=True, **extra)
        else:
            # Coda's form as printed: teacher(g2) against student(g1) and the crops.
            with torch.no_grad(), policy.autocast():
                t_org, t_ins = self._teacher_forward(g2)
            with policy.autocast():
                s_org, s_ins, *s_b = self.student(g1, crops, **extra)
        return t_org, t_ins, s_org, s_ins, (s_b[0] if s_b else None)

    def losses(
        self, outputs: tuple[torch.Tensor, ...], labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(loss_inter, loss_intra, inter_skipped)`` from :meth:`forward`'s outputs (steps 3-4)."""
        t_org, t_ins, s_org, s_ins, _ = outputs
        b = labels.shape[0]
        zero = torch.zeros((), device=self.device)
        loss_inter, loss_intra, inter_skipped = zero, zero, False
        if self.lambda_inter > 0:
            if self.symmetric:
                l12, inter_skipped = self._inter_term(s_org[:b], t_org[b:], labels)
                l21, _ = self._inter_term(s_org[b:], t_org[:b], labels)
                loss_inter = 0.5 * (l12 + l21)
            else:
                loss_inter, inter_skipped = self._inter_term(s_org, t_org, labels)
        if self.lambda_intra > 0:
            temp = float(self.schedules.teacher_temp[epoch])
            if self.symmetric:
                loss_intra = self.intra_loss(
                    s_ins.float(),
                    t_ins.float().detach(),
                    temp,
                    self.n_local_crops + 2,
                    n_teacher_views=2,
                    pairs=self._pairs,
                )
            else:
                loss_intra = self.intra_loss(s_ins.float(), t_ins.float().detach(), temp, self.n_local_crops)
        return loss_inter, loss_intra, inter_skipped

    def koleo_term(self, outputs: tuple[torch.Tensor, ...], b: int) -> torch.Tensor:
        """Mean KoLeo loss of the student's bottleneck vectors, per global view of ``b`` images (0 when off)."""
        bottleneck = outputs[4]
        if bottleneck is None or b < 2:  # one image has no neighbour
            return torch.zeros((), device=self.device)
        chunks = bottleneck.float().split(b)  # g1 (and g2 in the symmetric form)
        return torch.stack([self.koleo(c) for c in chunks]).mean()

    def update(self, t_ins: torch.Tensor | None, epoch: int, it: int) -> None:
        """Clipping, AdamW step, EMA teacher and centre (steps 6-8), after the backward passes."""
        self.scaler.unscale_(self.optimizer)  # no-op unless float16
        if self.clip_grad > 0:
            clip_gradients_(self._params, self.clip_grad)
        if epoch < self.freeze_last_layer:
            for p in self._params:
                if id(p) in self._last_layer:
                    p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ema_update(self.teacher, self.student_module, float(self.schedules.momentum[it]))
        if self.lambda_intra > 0:
            self.intra_loss.update_center(t_ins.float().detach())

    def _micro_batches(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``batch`` cut into ``accumulate_steps`` consecutive parts (the crops by their image)."""
        k = self.accumulate_steps
        if k == 1:
            return [batch]
        b = batch["g1"].shape[0]
        bounds = [round(i * b / k) for i in range(k + 1)]
        parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = {key: v[lo:hi] for key, v in batch.items() if key != "locals"}
            if "locals" in batch:  # (N_local * B, ...) crops, crop-major like the views
                n = batch["locals"].shape[0] // b
                part["locals"] = (
                    batch["locals"]
                    .view(n, b, *batch["locals"].shape[1:])[:, lo:hi]
                    .reshape(n * (hi - lo), *batch["locals"].shape[1:])
                )
            parts.append(part)
        return parts

    def step(self, batch: dict[str, torch.Tensor], epoch: int, it: int) -> StepResult:
        """One optimisation step on a batch; ``it`` is the global step index.

        With ``accumulate_steps = k`` the batch is cut into ``k`` parts whose gradients add up
        before the one optimiser step (for a GPU that does not fit the whole batch). Each
        part's inter-organ term contrasts the teacher embeddings of that part (over all
        ranks), so it sees ``1/k`` of the negatives of an undivided step. The EMA and the
        centre are updated once, from the whole batch.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.schedules.lr[it])
            group["weight_decay"] = float(self.schedules.weight_decay[it]) if group.get("apply_wd") else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        parts = self._micro_batches(batch)
        totals = torch.zeros(4, device=self.device)
        t_ins_all, skipped = [], False
        for j, part in enumerate(parts):
            crops = self.policy.batch(part["locals"]) if self.lambda_intra > 0 else None
            outputs = self.forward(self.policy.batch(part["g1"]), self.policy.batch(part["g2"]), crops)
            labels = part["labels"].to(self.device, non_blocking=True)
            loss_inter, loss_intra, inter_skipped = self.losses(outputs, labels, epoch)
            loss_koleo = self.koleo_term(outputs, labels.shape[0])
            loss = self.lambda_inter * loss_inter + self.lambda_intra * loss_intra + self.koleo_weight * loss_koleo
            if not torch.isfinite(loss.detach()).item():
                raise FloatingPointError(
                    f"the training loss became non-finite ({loss.item()}) at epoch {epoch}, step {it} "
                    f"(inter-organ {loss_inter.item()}, intra-organ {loss_intra.item()}); training stopped "
                    "before updating the weights, the last checkpoint is intact. Lower lr or check the data."
                )
            sync = (
                contextlib.nullcontext()
                if j == len(parts) - 1 or not hasattr(self.student, "no_sync")
                else self.student.no_sync()
            )  # DDP: one gradient all-reduce per optimiser step
            with sync:
                self.scaler.scale(loss / len(parts)).backward()
            totals += torch.stack(
                [loss.detach(), loss_inter.detach(), loss_intra.detach(), loss_koleo.detach()]
            ).float() / len(parts)
            t_ins_all.append(outputs[1])
            skipped = skipped or inter_skipped
        t_ins = torch.cat(t_ins_all) if self.lambda_intra > 0 else None
        self.update(t_ins, epoch, it)
        # Losses reported as global-batch means.
        vals = D.all_reduce_sum(totals, self.dist) / self.dist.world_size
        loss_v, inter_v, intra_v, koleo_v = (float(v) for v in vals.tolist())
        return StepResult(loss_v, inter_v, intra_v, skipped, koleo_v)

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, loader, epoch: int, *, progress=None, seed: int = 0) -> dict[str, Any]:
        """Train one epoch; returns its history record.

        The global torch generator (stochastic depth) is seeded from ``(seed, epoch, rank)``
        for the epoch and restored afterwards, so a run resumed at an epoch boundary draws
        the same masks as an uninterrupted one.
        """
        self.student.train()
        self.teacher.eval()  # the EMA teacher never trains (no dropout/drop-path noise)
        stats = EpochStats()
        devices = [self.device] if self.device.type == "cuda" else []
        t0 = time.perf_counter()
        wait = 0.0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(
                int(np.random.SeedSequence([int(seed), int(epoch), self.dist.rank, 17]).generate_state(1)[0])
            )
            batches = iter(loader)
            for b in range(self.steps_per_epoch):
                t_wait = time.perf_counter()
                batch = next(batches, None)
                wait += time.perf_counter() - t_wait
                if batch is None:
                    break
                it = epoch * self.steps_per_epoch + b
                r = self.step(batch, epoch, it)
                stats.add(
                    r,
                    batch["g1"].shape[0] * self.dist.world_size,
                    self.lambda_inter,
                    self.lambda_intra,
                    self.koleo_weight,
                )
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(
                        loss=f"{r.loss:.3f}",
                        inter=f"{r.loss_inter:.3f}",
                        intra=f"{r.loss_intra:.3f}",
                        **self.progress_extra,
                    )
        elapsed = time.perf_counter() - t0
        last = epoch * self.steps_per_epoch + self.steps_per_epoch - 1
        koleo = {"loss_koleo": stats.mean("loss_koleo")} if self.koleo_weight > 0 else {}
        return {
            **koleo,
            "epoch": epoch + 1,
            "loss": stats.mean("loss"),
            "loss_inter": stats.mean("loss_inter"),
            "loss_intra": stats.mean("loss_intra"),
            "inter_skipped_steps": stats.inter_skipped_steps,
            "lr": float(self.schedules.lr[last]),
            "weight_decay": float(self.schedules.weight_decay[last]),
            "momentum": float(self.schedules.momentum[last]),
            "teacher_temp": float(self.schedules.teacher_temp[epoch]),
            "images_per_s": stats.images / elapsed if elapsed > 0 else float("nan"),
            "seconds": elapsed,
            # share of the epoch spent waiting for the loader (decoding, augmentation): high = data-bound
            "data_wait_share": wait / elapsed if elapsed > 0 else float("nan"),
        }
