"""Intra-organ loss: DINO self-distillation from the teacher's global view to the student's crops.

Paper Eq. 2 as printed reads ``L = -1/|Z| sum_{z^s in Z} -z^t log z^s``: the inner minus is a
stray sign (with it the "loss" would be minimised by making the cross-entropy large). The
intended and implemented loss is DINO's (Caron et al. 2021), the paper's ref. [1]:

``p_t = softmax((t - c) / tau_t)`` (teacher centring and sharpening, no gradient),
``L = mean over crops v and images b of  -sum_k p_t[b, k] * log_softmax(s_v[b] / tau_s)[k]``.

Defaults where the paper is silent are DINO's (``main_dino.py`` / ``DINOLoss``, read from the
facebookresearch/dino source): student temperature 0.1, centre momentum 0.9, and a teacher
temperature passed per call (DINO's argparse defaults: ``--warmup_teacher_temp 0.04``,
``--teacher_temp 0.04``, ``--warmup_teacher_temp_epochs 0``, i.e. a constant 0.04; the help
text of the last says "(Default: 30)" but the actual default is 0; the README's "boosting DINO
performance" recipe uses ``--teacher_temp 0.07 --warmup_teacher_temp_epochs 30``). See
:func:`codafeat._train.schedules.teacher_temp_schedule`.

The centre ``c`` is a running mean of the teacher outputs: call :meth:`IntraOrganLoss.update_center`
after the loss (DINO updates it after computing the loss with the previous centre).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._defaults import HEAD_OUT_DIM

__all__ = ["IntraOrganLoss"]


class IntraOrganLoss(nn.Module):
    """Cross-entropy between centred/sharpened teacher probabilities and student crop predictions.

    Parameters
    ----------
    out_dim : int, default=65536
        Number of head outputs (size of the centre).
    student_temp : float, default=0.1
        ``tau_s`` (DINO's default).
    center_momentum : float, default=0.9
        Momentum of the running centre (DINO's default), in [0, 1].

    Attributes
    ----------
    center : Tensor, shape (1, out_dim)
        Running mean of the teacher outputs (a buffer: saved in checkpoints).

    Examples
    --------
    >>> import torch
    >>> loss_fn = IntraOrganLoss(out_dim=16)
    >>> student, teacher = torch.randn(3 * 2, 16), torch.randn(2, 16)  # 3 crops of 2 images
    >>> loss = loss_fn(student, teacher, teacher_temp=0.04, n_crops=3)
    >>> loss_fn.update_center(teacher)
    >>> loss.ndim
    0
    """

    center: torch.Tensor

    def __init__(self, out_dim: int = HEAD_OUT_DIM, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"IntraOrganLoss: out_dim must be a positive integer, got {out_dim!r}")
        if not float(student_temp) > 0 or float(student_temp) == float("inf"):
            raise ValueError(f"IntraOrganLoss: student_temp must be a positive finite number, got {student_temp!r}")
        if not 0.0 <= float(center_momentum) <= 1.0:
            raise ValueError(f"IntraOrganLoss: center_momentum must be in [0, 1], got {center_momentum!r}")
        self.out_dim = out_dim
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, student_temp={self.student_temp}, center_momentum={self.center_momentum}"

    def forward(
        self,
        student_out: torch.Tensor,
        teacher_out: torch.Tensor,
        teacher_temp: float,
        n_crops: int,
        *,
        n_teacher_views: int = 1,
        pairs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean over (student view, teacher view) pairs and images of ``H(p_teacher, p_student)``.

        Parameters
        ----------
        student_out : Tensor, shape (n_crops * B, out_dim)
            Student head outputs, view-major: all images' view 0, then view 1, ...
        teacher_out : Tensor, shape (n_teacher_views * B, out_dim)
            Teacher head outputs of each image's global view(s), view-major (detached here).
        teacher_temp : float
            ``tau_t`` for this epoch, > 0.
        n_crops : int
            Number of student views per image, >= 1.
        n_teacher_views : int, default=1
            Number of teacher views per image (1: Coda's ``g2``; 2: DINO's symmetric form).
        pairs : bool Tensor of shape (n_crops, n_teacher_views), optional
            Which (student view, teacher view) pairs enter the mean; default all. DINO
            leaves out the pairs of a global view with itself.

        Returns
        -------
        Tensor
            Scalar float32 loss.
        """
        n_crops, n_t = int(n_crops), int(n_teacher_views)
        t = float(teacher_temp)
        if not t > 0 or t == float("inf"):
            raise ValueError(f"IntraOrganLoss: teacher_temp must be a positive finite number, got {teacher_temp!r}")
        if n_crops < 1 or n_t < 1:
            raise ValueError(f"IntraOrganLoss: n_crops and n_teacher_views must be >= 1, got {n_crops}, {n_t}")
        if teacher_out.ndim != 2 or teacher_out.shape[1] != self.out_dim or teacher_out.shape[0] % n_t:
            raise ValueError(
                f"IntraOrganLoss: teacher_out must have shape (n_teacher_views * B, {self.out_dim}) with "
                f"n_teacher_views={n_t}, got {tuple(teacher_out.shape)}"
            )
        b = teacher_out.shape[0] // n_t
        if student_out.shape != (n_crops * b, self.out_dim):
            raise ValueError(
                f"IntraOrganLoss: student_out must have shape (n_crops * B, out_dim) = "
                f"({n_crops * b}, {self.out_dim}) for n_crops={n_crops}, B={b}; got {tuple(student_out.shape)}"
            )
        if pairs is None:
            weight = torch.ones(n_crops, n_t, device=student_out.device)
        else:
            if tuple(pairs.shape) != (n_crops, n_t) or pairs.dtype != torch.bool or not bool(pairs.any()):
                raise ValueError(
                    f"IntraOrganLoss: pairs must be a non-empty bool mask of shape ({n_crops}, {n_t}), "
                    f"got {pairs.dtype} {tuple(pairs.shape)}"
                )
            weight = pairs.to(device=student_out.device, dtype=torch.float32)
        with torch.autocast(device_type=student_out.device.type, enabled=False):
            p_t = self.teacher_probs(teacher_out, t)
            log_q = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
            # (crops, B, K) x (teacher views, B, K) -> (crops, teacher views, B) without the product tensor.
            ce = -torch.einsum("cbk,tbk->ctb", log_q.view(n_crops, b, self.out_dim), p_t.view(n_t, b, self.out_dim))
            return (ce.mean(dim=2) * weight).sum() / weight.sum()

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """The teacher's targets: ``softmax((teacher_out - center) / teacher_temp)`` (centred, sharpened)."""
        return F.softmax((teacher_out.detach().float() - self.center.to(teacher_out.device)) / teacher_temp, dim=-1)

    def teacher_log_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """The log of :meth:`teacher_probs` (what the training monitor measures the targets with)."""
        return F.log_softmax(
            (teacher_out.detach().float() - self.center.to(teacher_out.device)) / float(teacher_temp), dim=-1
        )

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``center <- m * center + (1 - m) * mean(teacher_out)``, the mean taken over all ranks.

        Under an initialised ``torch.distributed`` process group the batch sum is all-reduced
        and divided by ``B * world_size`` (every rank must call this with the same ``B``).
        """
        if teacher_out.ndim != 2 or teacher_out.shape[1] != self.out_dim:
            raise ValueError(
                f"IntraOrganLoss.update_center: teacher_out must have shape (B, {self.out_dim}), "
                f"got {tuple(teacher_out.shape)}"
            )
        batch_sum = teacher_out.detach().float().sum(dim=0, keepdim=True)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            world = dist.get_world_size()
        batch_mean = batch_sum / (teacher_out.shape[0] * world)
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)
