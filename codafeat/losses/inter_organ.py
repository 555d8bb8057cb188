"""Inter-organ loss: supervised contrast between student and teacher embeddings (paper Eq. 1).

For each student anchor ``i`` (embedding ``z_i`` of view g1 of image i) and the teacher
embeddings ``z_j`` (view g2 of every image of the, possibly gathered, global batch):

* positives ``P(i)``: teacher embeddings with the organ label of ``i`` (i's own g2 included);
* negatives ``N(i)``: teacher embeddings with another label;
* ``L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{n in D(i)} exp(z_i.z_n / tau) )``.

The denominator set ``D(i)`` is, with ``denominator="negatives"`` (default, the paper's Eq. 1
as printed), ``N(i)``; with ``denominator="all"`` it is SupCon's (Khosla et al. 2020, the
paper's ref. [18]) "all but the anchor itself". Here anchors are student embeddings and
candidates are teacher embeddings, so no candidate *is* the anchor: "all but self" is every
teacher embedding, ``P(i) ∪ N(i)`` (the anchor's own teacher view is a positive, not self).

Anchors without a positive or without a negative are left out of the mean, for both
denominators, so that the two variants average over the same anchors. A batch with a single
organ thus has no valid anchor: the loss is an exact zero that is still part of the graph
(gradients are zeros, never NaN) and ``n_anchors`` is 0 so the caller can record the skip.

``tau = 0.1``: the paper does not state it; 0.1 is the temperature SupCon reports working
best and DINO's student temperature. Computation is in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InterOrganLoss", "DENOMINATORS"]

DENOMINATORS = ("negatives", "all")


class InterOrganLoss(nn.Module):
    """Paper Eq. 1 between student anchors and teacher candidates, organs as labels.

    Parameters
    ----------
    temperature : float, default=0.1
        ``tau`` in Eq. 1; must be > 0.
    denominator : {"negatives", "all"}, default="negatives"
        Sum over other-organ teacher embeddings only (paper) or over all teacher embeddings
        (SupCon's "all but self"; see the module docstring).

    Examples
    --------
    >>> import torch
    >>> loss_fn = InterOrganLoss()
    >>> z_s, z_t = torch.randn(4, 8), torch.randn(4, 8)
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> loss, n_anchors = loss_fn(z_s, z_t, y, y)
    >>> n_anchors
    4
    """

    def __init__(self, temperature: float = 0.1, denominator: str = "negatives") -> None:
        super().__init__()
        t = float(temperature)
        if not t > 0 or t == float("inf"):
            raise ValueError(f"InterOrganLoss: temperature must be a positive finite number, got {temperature!r}")
        if denominator not in DENOMINATORS:
            raise ValueError(f"InterOrganLoss: denominator must be one of {DENOMINATORS}, got {denominator!r}")
        self.temperature = t
        self.denominator = denominator

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, denominator={self.denominator!r}"

    def forward(
        self,
        z_student: torch.Tensor,
        z_teacher: torch.Tensor,
        labels_student: torch.Tensor,
        labels_teacher: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """Loss and number of anchors it averages over.

        Parameters
        ----------
        z_student : Tensor, shape (B, D)
            Student embeddings (anchors); l2-normalised here.
        z_teacher : Tensor, shape (M, D)
            Teacher embeddings (candidates), e.g. gathered over ranks; l2-normalised and
            detached here (no gradient ever reaches the teacher).
        labels_student : Tensor, shape (B,)
            Integer organ label of each anchor.
        labels_teacher : Tensor, shape (M,)
            Integer organ label of each candidate.

        Returns
        -------
        loss : Tensor
            Scalar float32; 0 (graph-connected) when no anchor has a positive and a negative.
        n_anchors : int
            Number of anchors with at least one positive and one negative.
        """
        _check_inputs(z_student, z_teacher, labels_student, labels_teacher)
        with torch.autocast(device_type=z_student.device.type, enabled=False):
            zs = F.normalize(z_student.float(), dim=1)
            zt = F.normalize(z_teacher.detach().float(), dim=1)
            ys = labels_student.reshape(-1, 1)
            yt = labels_teacher.to(ys.device).reshape(1, -1)
            pos = ys == yt  # (B, M)
            n_pos = pos.sum(1)
            valid = (n_pos > 0) & (n_pos < pos.shape[1])  # >= 1 positive and >= 1 negative
            n_anchors = int(valid.sum())
            if n_anchors == 0:
                return (zs * 0.0).sum(), 0
            zs, pos, n_pos = zs[valid], pos[valid], n_pos[valid]
            sim = zs @ zt.T / self.temperature  # (A, M)
            if self.denominator == "negatives":
                log_denom = torch.logsumexp(sim.masked_fill(pos, float("-inf")), dim=1)
            else:
                log_denom = torch.logsumexp(sim, dim=1)
            # -1/|P| sum_p (s_ip - log_denom_i) = log_denom_i - mean_p s_ip
            mean_pos = (sim * pos).sum(1) / n_pos
            return (log_denom - mean_pos).mean(), n_anchors


def _check_inputs(zs: torch.Tensor, zt: torch.Tensor, ys: torch.Tensor, yt: torch.Tensor) -> None:
    if zs.ndim != 2 or zt.ndim != 2:
        raise ValueError(
            f"InterOrganLoss: z_student and z_teacher must be 2-D (batch, dim), got shapes "
            f"{tuple(zs.shape)} and {tuple(zt.shape)}"
        )
    if zs.shape[1] != zt.shape[1]:
        raise ValueError(
            f"InterOrganLoss: z_student and z_teacher have different sizes {zs.shape[1]} and {zt.shape[1]}"
        )
    for name, y, z in (("labels_student", ys, zs), ("labels_teacher", yt, zt)):
        if y.ndim != 1 or y.shape[0] != z.shape[0]:
            raise ValueError(f"InterOrganLoss: {name} must have shape ({z.shape[0]},), got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex():
            raise ValueError(f"InterOrganLoss: {name} must hold integer organ labels, got dtype {y.dtype}")
