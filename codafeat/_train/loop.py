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
4. the objective (:class:`~codafeat._train.objective.CodaObjective`) returns the named
   losses of the terms that are on and ``L = lambda_inter * L_inter + lambda_intra *
   L_intra (+ koleo_weight * L_koleo)``; a single-organ global batch has no negatives: its
   inter-organ term is skipped and counted in the history;
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
from ..nn.coda_model import CodaNetwork
from ..nn.ema import ema_update
from ..nn.heads import cancel_last_layer_grad
from . import dist as D
from .objective import CodaObjective, StepOutputs

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
    """The global-batch means of one step's named losses (``"loss"`` and the terms that are on)."""

    losses: dict[str, float]
    inter_skipped: bool = False

    def __getattr__(self, name: str) -> float:  # r.loss, r.loss_inter ...: 0.0 for a term that is off
        if name.startswith("loss"):
            return self.__dict__["losses"].get(name, 0.0)
        raise AttributeError(name)


#: Losses every history record carries (NaN when the term is off or never counted).
REPORTED = ("loss", "loss_inter", "loss_intra")


@dataclass
class EpochStats:
    """Sums of whatever named losses the steps report, and how many steps reported each."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    inter_skipped_steps: int = 0
    images: int = 0

    def add(self, r: StepResult, n_images: int) -> None:
        for key, value in r.losses.items():
            if key == "loss_inter" and r.inter_skipped:
                continue  # a single-organ global batch has no inter-organ term to average
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.inter_skipped_steps += int(r.inter_skipped)
        self.images += n_images

    def mean(self, key: str) -> float:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else float("nan")

    def means(self) -> dict[str, float]:
        """The mean of every loss seen, and of the always reported ones."""
        return {key: self.mean(key) for key in dict.fromkeys([*REPORTED, *self.sums])}


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


def _callables(
    student: nn.Module, teacher: nn.Module, dist_info: D.DistInfo, device: torch.device, compile: bool | str
) -> tuple[nn.Module, nn.Module]:
    """What the step calls: the student (in DDP under ``torchrun``) and the teacher, compiled on request.

    The bare modules stay the trainer's ``student_module`` and ``teacher`` (EMA, checkpoints).
    """
    if dist_info.is_distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        student = DDP(student, device_ids=ids, broadcast_buffers=False)
    if compile:
        kwargs = {"backend": compile} if isinstance(compile, str) else {}
        return torch.compile(student, **kwargs), torch.compile(teacher, **kwargs)
    return student, teacher


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
        self.accumulate_steps = int(accumulate_steps)
        self.symmetric = bool(symmetric)
        self.teacher = teacher
        self.objective = CodaObjective(
            inter_loss=inter_loss,
            intra_loss=intra_loss,
            lambda_inter=lambda_inter,
            lambda_intra=lambda_intra,
            koleo_weight=koleo_weight,
            symmetric=symmetric,
            n_local_crops=n_local_crops,
            dist_info=dist_info,
            device=device,
        )
        self.schedules = schedules
        self.steps_per_epoch = steps_per_epoch
        self.clip_grad = float(clip_grad)
        self.freeze_last_layer = int(freeze_last_layer)
        self.device = device
        self.dist = dist_info
        self.n_local_crops = n_local_crops
        self.policy = DevicePolicy(device)
        self.scaler = self.policy.grad_scaler()  # float16 GPUs only; a no-op otherwise
        self.student, self._teacher_forward = _callables(student, teacher, dist_info, device, compile)
        self.optimizer = torch.optim.AdamW(param_groups(student), lr=float(schedules.lr[0]))
        self._params = [p for p in student.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ what callers read
    @property
    def intra_loss(self) -> IntraOrganLoss | None:
        return self.objective.intra_loss if self.objective.terms.intra else None

    @property
    def center(self) -> torch.Tensor | None:
        """The intra-organ teacher centre (``None`` without that term)."""
        return self.objective.center

    def teacher_temp(self, epoch: int) -> float:
        """The intra-organ teacher temperature of ``epoch``."""
        return float(self.schedules.teacher_temp[epoch])

    # ------------------------------------------------------------------ one step
    def forward(self, g1: torch.Tensor, g2: torch.Tensor, crops: torch.Tensor | None) -> StepOutputs:
        """The teacher's and the student's outputs of a placed batch (steps 1-2 of the module doc)."""
        policy = self.policy
        extra = {"return_bottleneck": True} if self.objective.needs_bottleneck else {}
        if self.symmetric:
            # DINO's form: both global views through both networks.
            both = torch.cat([g1, g2])
            with torch.no_grad(), policy.autocast():
                teacher = self._teacher_forward(both)
            with policy.autocast():
                student = self.student(both, crops, ins_on_global=True, **extra)
        else:
            # Coda's form as printed: teacher(g2) against student(g1) and the crops.
            with torch.no_grad(), policy.autocast():
                teacher = self._teacher_forward(g2)
            with policy.autocast():
                student = self.student(g1, crops, **extra)
        return StepOutputs(teacher, student)

    def update(self, teacher_ins: torch.Tensor | None, epoch: int, it: int) -> None:
        """Clipping, AdamW step, EMA teacher and centre (steps 6-8), after the backward passes."""
        self.scaler.unscale_(self.optimizer)  # no-op unless float16
        if self.clip_grad > 0:
            clip_gradients_(self._params, self.clip_grad)
        if epoch < self.freeze_last_layer:
            cancel_last_layer_grad(*(h for h in (self.student_module.head_org, self.student_module.head_ins) if h))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ema_update(self.teacher, self.student_module, float(self.schedules.momentum[it]))
        self.objective.update(teacher_ins)

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
        totals: dict[str, torch.Tensor] = {}
        t_ins_all, skipped = [], False
        for j, part in enumerate(parts):
            crops = self.policy.batch(part["locals"]) if self.objective.needs_crops else None
            outputs = self.forward(self.policy.batch(part["g1"]), self.policy.batch(part["g2"]), crops)
            labels = part["labels"].to(self.device, non_blocking=True)
            losses, inter_skipped = self.objective(outputs, labels, self.teacher_temp(epoch))
            loss = losses["loss"]
            if not torch.isfinite(loss.detach()).item():
                terms = ", ".join(f"{k} {v.item()}" for k, v in losses.items() if k != "loss")
                raise FloatingPointError(
                    f"the training loss became non-finite ({loss.item()}) at epoch {epoch}, step {it} ({terms}); "
                    "training stopped before updating the weights, the last checkpoint is intact. Lower lr or "
                    "check the data."
                )
            sync = (
                contextlib.nullcontext()
                if j == len(parts) - 1 or not hasattr(self.student, "no_sync")
                else self.student.no_sync()
            )  # DDP: one gradient all-reduce per optimiser step
            with sync:
                self.scaler.scale(loss / len(parts)).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / len(parts)
            t_ins_all.append(outputs.teacher.ins)
            skipped = skipped or inter_skipped
        self.update(torch.cat(t_ins_all) if self.objective.terms.intra else None, epoch, it)
        # Losses reported as global-batch means (every rank has the same keys: the same terms).
        keys = sorted(totals)
        vals = D.all_reduce_sum(torch.stack([totals[k] for k in keys]), self.dist) / self.dist.world_size
        return StepResult(dict(zip(keys, (float(v) for v in vals.tolist()))), skipped)

    # ------------------------------------------------------------------ one epoch
    def run_epoch(
        self, loader, epoch: int, *, progress=None, seed: int = 0, postfix: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Train one epoch; returns its history record.

        ``progress`` (a tqdm bar) advances by one per step and shows the step's losses, then
        ``postfix`` (say, the last monitor figures).

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
                stats.add(r, batch["g1"].shape[0] * self.dist.world_size)
                if progress is not None:
                    progress.update(1)
                    shown = {k.removeprefix("loss_") or "loss": f"{v:.3f}" for k, v in r.losses.items()}
                    progress.set_postfix(**shown, **(postfix or {}))
        elapsed = time.perf_counter() - t0
        last = epoch * self.steps_per_epoch + self.steps_per_epoch - 1
        means = stats.means()
        extra_terms = {k: v for k, v in means.items() if k not in REPORTED}
        return {
            **extra_terms,
            "epoch": epoch + 1,
            **{k: means[k] for k in REPORTED},
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
