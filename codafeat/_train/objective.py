"""Coda's objective in one place, in the style of DINOv2's ``SSLMetaArch``: which terms are on,
what each computes, and one dict of named losses.

:class:`Terms` decides once, from the weights, which terms a run trains: the inter-organ
contrast (``lambda_inter > 0``), the intra-organ self-distillation (``lambda_intra > 0``)
and DINOv2's KoLeo spreading term (``koleo_weight > 0``, on the intra-organ head). Nothing
else in codafeat tests a weight: the networks build the heads :class:`Terms` asks for, the
trainer feeds the crops and the bottleneck the objective says it needs, and
:class:`CodaObjective` returns ``{"loss_inter": ..., "loss_intra": ..., "loss_koleo": ...,
"loss": weighted sum}`` with the terms that are on. The epoch statistics, the history and
the progress bar sum whatever keys arrive, so adding a term is one loss module plus one
block here.

The teacher targets' centring and sharpening are the intra-organ loss's own
(:meth:`~codafeat.losses.intra_organ.IntraOrganLoss.teacher_probs`); the training monitor
measures the targets with the same loss (``teacher_log_probs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..losses.inter_organ import InterOrganLoss
from ..losses.intra_organ import IntraOrganLoss
from ..losses.koleo import KoLeoLoss
from ..nn.coda_model import NetworkOutputs
from . import dist as D

__all__ = ["CodaObjective", "StepOutputs", "Terms"]


@dataclass(frozen=True)
class Terms:
    """Which terms a run trains, decided once from their weights.

    Examples
    --------
    >>> Terms.from_weights(1.0, 0.0, 0.0)
    Terms(inter=True, intra=False, koleo=False)
    """

    inter: bool
    intra: bool
    koleo: bool

    @classmethod
    def from_weights(cls, lambda_inter: float, lambda_intra: float, koleo_weight: float = 0.0) -> Terms:
        """The terms of these weights.

        Raises
        ------
        ValueError
            If no term is on, or the KoLeo term is asked for without the intra-organ head.
        """
        if lambda_inter == 0 and lambda_intra == 0:
            raise ValueError("lambda_inter and lambda_intra are both 0: nothing to train")
        if koleo_weight > 0 and lambda_intra == 0:
            raise ValueError(
                f"koleo_weight={koleo_weight} acts on the intra-organ head, which lambda_intra=0 removes: "
                "set koleo_weight=0 too"
            )
        return cls(inter=lambda_inter > 0, intra=lambda_intra > 0, koleo=koleo_weight > 0)


class StepOutputs(NamedTuple):
    """The networks' outputs of one (part of a) step: the teacher's and the student's."""

    teacher: NetworkOutputs
    student: NetworkOutputs


class CodaObjective:
    """The named losses of one step (see the module docs).

    Parameters
    ----------
    inter_loss, intra_loss : loss modules or None
        The inter-organ and intra-organ losses (``None`` for a term that is off).
    lambda_inter, lambda_intra, koleo_weight : float
        The weights of the terms; :class:`Terms` decides from them which are on.
    symmetric : bool
        DINO's symmetric form (both global views through both networks) or Coda's as printed.
    n_local_crops : int
        Local crops per image.
    dist_info : DistInfo
        The process group, for the inter-organ negatives of the global batch.
    device : torch.device
        Where the losses live.
    """

    #: The report order of the terms (and of their weighted sum).
    KEYS = ("loss_inter", "loss_intra", "loss_koleo")

    def __init__(
        self,
        *,
        inter_loss: InterOrganLoss | None,
        intra_loss: IntraOrganLoss | None,
        lambda_inter: float,
        lambda_intra: float,
        koleo_weight: float = 0.0,
        symmetric: bool,
        n_local_crops: int,
        dist_info: D.DistInfo,
        device: torch.device,
    ) -> None:
        self.terms = Terms.from_weights(float(lambda_inter), float(lambda_intra), float(koleo_weight))
        if (self.terms.inter and inter_loss is None) or (self.terms.intra and intra_loss is None):
            raise ValueError("a term with a positive weight needs its loss module")
        self.inter_loss, self.intra_loss = inter_loss, intra_loss
        self.koleo = KoLeoLoss() if self.terms.koleo else None
        self.weights = {
            "loss_inter": float(lambda_inter),
            "loss_intra": float(lambda_intra),
            "loss_koleo": float(koleo_weight),
        }
        self.symmetric = bool(symmetric)
        self.n_local_crops = int(n_local_crops)
        self.dist = dist_info
        self.device = device
        # Symmetric intra-organ pairs (DINO): student views [g1, g2, crops] x teacher views
        # [g1, g2], leaving out each global view paired with itself.
        self._pairs = torch.ones(self.n_local_crops + 2, 2, dtype=torch.bool)
        self._pairs[0, 0] = self._pairs[1, 1] = False

    # ------------------------------------------------------------------ what the step must provide
    @property
    def needs_crops(self) -> bool:
        """Whether the student sees the local crops (the intra-organ term)."""
        return self.terms.intra

    @property
    def needs_bottleneck(self) -> bool:
        """Whether the student must return its intra-organ bottleneck (the KoLeo term)."""
        return self.terms.koleo

    @property
    def center(self) -> torch.Tensor | None:
        """The intra-organ teacher centre (``None`` without that term)."""
        return self.intra_loss.center if self.terms.intra else None

    # ------------------------------------------------------------------ the terms
    def __call__(
        self, out: StepOutputs, labels: torch.Tensor, teacher_temp: float
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """``(losses, inter_skipped)``: the terms that are on, and ``"loss"``, their weighted sum.

        ``inter_skipped`` is true when no anchor of the global batch had a negative (a single
        organ): the inter-organ term is then 0 and does not count in the epoch's mean.
        """
        losses: dict[str, torch.Tensor] = {}
        skipped = False
        if self.terms.inter:
            losses["loss_inter"], skipped = self._inter(out, labels)
        if self.terms.intra:
            losses["loss_intra"] = self._intra(out, teacher_temp)
        if self.terms.koleo:
            losses["loss_koleo"] = self._koleo(out.student.bottleneck, labels.shape[0])
        total = torch.zeros((), device=self.device)
        for key in self.KEYS:
            if key in losses:
                total = total + self.weights[key] * losses[key]
        losses["loss"] = total
        return losses, skipped

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

    def _inter(self, out: StepOutputs, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
        s_org, t_org, b = out.student.org, out.teacher.org, labels.shape[0]
        if not self.symmetric:
            return self._inter_term(s_org, t_org, labels)
        l12, skipped = self._inter_term(s_org[:b], t_org[b:], labels)
        l21, _ = self._inter_term(s_org[b:], t_org[:b], labels)
        return 0.5 * (l12 + l21), skipped

    def _intra(self, out: StepOutputs, teacher_temp: float) -> torch.Tensor:
        s_ins, t_ins = out.student.ins.float(), out.teacher.ins.float().detach()
        if self.symmetric:
            return self.intra_loss(
                s_ins, t_ins, teacher_temp, self.n_local_crops + 2, n_teacher_views=2, pairs=self._pairs
            )
        return self.intra_loss(s_ins, t_ins, teacher_temp, self.n_local_crops)

    def _koleo(self, bottleneck: torch.Tensor | None, b: int) -> torch.Tensor:
        """Mean KoLeo loss of the student's bottleneck vectors, per global view of ``b`` images."""
        if bottleneck is None or b < 2:  # one image has no neighbour
            return torch.zeros((), device=self.device)
        chunks = bottleneck.float().split(b)  # g1 (and g2 in the symmetric form)
        return torch.stack([self.koleo(c) for c in chunks]).mean()

    # ------------------------------------------------------------------ after the step
    @torch.no_grad()
    def update(self, teacher_ins: torch.Tensor | None) -> None:
        """The intra-organ centre, from the whole batch's teacher outputs (a no-op without the term)."""
        if self.terms.intra and teacher_ins is not None:
            self.intra_loss.update_center(teacher_ins.float().detach())

    def state(self) -> dict[str, Any]:
        """The objective's own tensors a checkpoint keeps (the centre)."""
        return {"intra_center": self.center} if self.terms.intra else {}
