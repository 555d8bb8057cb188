"""A training monitor: is the teacher learning, or collapsing?

Self-distillation fails quietly: the loss can sit near ``ln K`` or creep upwards while
nothing warns the user. Every few epochs :class:`TrainingMonitor` embeds a small
stratified held-out part of the training images (excluded from training, organ labels
known) with the current **teacher** and measures

* ``monitor_knn_accuracy``, ``monitor_nmi``: how well the teacher's pooled embeddings
  separate the organs (leave-one-out cosine kNN with k = min(5, the smallest organ's
  held-out count - 1); k-means NMI; see :func:`codafeat.analysis.organ_separation`);
* ``embed_std``: the mean per-dimension standard deviation of the l2-normalised
  embeddings times ``sqrt(d)`` (SimSiam's collapse indicator, rescaled so that 1 means
  isotropic and 0 means every image maps to the same vector);
* ``teacher_entropy``: the mean entropy of the teacher's centred, sharpened intra-organ
  distribution ``softmax((t - c) / tau_t)``; ``ln K`` is uniform: nothing to distil;
* ``teacher_mi``: ``H(mean_i p_i) - mean_i H(p_i)``, the information the teacher's
  targets carry about *which* image they belong to (0 when every image gets the same
  target, whether uniform or one-hot: DINO's two collapse modes);
* ``center_norm``: the norm of the teacher centre;
* ``organ_spread``: how far each organ's held-out embeddings spread around their organ's
  mean direction, ``1 - |mean of the organ's unit vectors|`` averaged over organs (0: every
  image of an organ maps to one point, the within-organ collapse that a strong inter-organ
  branch can cause and that would squeeze out what differs within an organ, a disease);
* ``organ_rank``: the effective rank (exp of the entropy of the normalised singular
  values) of each organ's centred embeddings, averaged over organs: how many directions
  the within-organ differences use. Both are diagnostics, not targets.

:func:`collapse_warnings` turns these into plain-language warnings.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning

__all__ = ["TrainingMonitor", "collapse_warnings", "monitor_split", "within_organ_spread", "MIN_PER_ORGAN"]

#: Held-out images each organ needs for the monitor to run (kNN needs same-organ neighbours).
MIN_PER_ORGAN = 2
#: ``teacher_entropy / ln K`` above this: the targets are nearly uniform.
UNIFORM_ENTROPY_RATIO = 0.97
#: ``teacher_mi`` below this (nats): every image gets nearly the same target.
MIN_TEACHER_MI = 0.05
#: ``embed_std`` below this: the backbone maps every image to nearly the same vector.
MIN_EMBED_STD = 0.05


def monitor_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Stratified ``(train_indices, monitor_indices, reason_if_disabled)``.

    Each organ gives ``round(fraction * n_organ)`` images to the monitor. When that is
    fewer than :data:`MIN_PER_ORGAN` for some organ, or leaves it fewer than 2 training
    images, the monitor is off: all images train and ``reason`` says why.
    """
    labels = np.asarray(labels)
    every = np.arange(len(labels))
    if fraction <= 0:
        return every, every[:0], "monitor_fraction=0"
    rng = np.random.default_rng([int(seed), 7919])
    held: list[np.ndarray] = []
    for organ in np.unique(labels):
        idx = np.flatnonzero(labels == organ)
        n = int(round(fraction * len(idx)))
        if n < MIN_PER_ORGAN or len(idx) - n < 2:
            return (
                every,
                every[:0],
                (
                    f"monitor_fraction={fraction} holds out {n} of the {len(idx)} images of organ {organ}; "
                    f"the monitor needs >= {MIN_PER_ORGAN} per organ and leaves >= 2 to train"
                ),
            )
        held.append(rng.choice(idx, size=n, replace=False))
    monitor = np.sort(np.concatenate(held))
    return np.setdiff1d(every, monitor), monitor, None


@dataclass
class TrainingMonitor:
    """Measures the teacher on fixed held-out images (see the module doc).

    Parameters
    ----------
    images : uint8 Tensor, shape (N, 1, S, S)
        The held-out images at the encoder's input size (as ``transform`` would feed them).
    labels : ndarray of int, shape (N,)
        Their organ labels.
    device : torch.device
        Where the teacher runs.
    batch_size : int
        Images per forward pass.
    """

    images: torch.Tensor
    labels: np.ndarray
    device: torch.device
    batch_size: int = 64

    @classmethod
    def from_cache(
        cls, cache: Any, indices: np.ndarray, labels: np.ndarray, image_size: int, device: torch.device
    ) -> TrainingMonitor:
        """Resize the cached images ``indices`` to ``image_size`` (antialiased bilinear)."""
        arr = torch.from_numpy(np.stack([np.asarray(cache[int(i)]) for i in indices]))
        x = arr.unsqueeze(1).float()
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        images = x.round_().clamp_(0, 255).to(torch.uint8)
        return cls(images=images, labels=np.asarray(labels)[indices].astype(np.int64), device=device)

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def measure(self, teacher: torch.nn.Module, intra_loss: Any, teacher_temp: float) -> dict[str, float]:
        """The monitor's figures for ``teacher`` (a :class:`~codafeat.nn.coda_model.CodaNetwork`).

        ``intra_loss`` (an :class:`~codafeat.losses.intra_organ.IntraOrganLoss`, or ``None``
        without the intra-organ term) turns the teacher's logits into its targets with the
        loss's own centring and sharpening at ``teacher_temp``.
        """
        from ..analysis import organ_separation

        was_training = teacher.training
        teacher.eval()
        feats, logits = [], []
        for start in range(0, len(self), self.batch_size):
            x = self.images[start : start + self.batch_size].to(self.device)
            f = teacher.encoder(x).float()
            feats.append(f.cpu())
            if getattr(teacher, "head_ins", None) is not None:
                logits.append(teacher.head_ins(f).float().cpu())
        teacher.train(was_training)
        E = torch.cat(feats)
        out: dict[str, float] = {}
        U = F.normalize(E, dim=1)
        out["embed_std"] = float(U.std(dim=0).mean() * math.sqrt(U.shape[1]))
        # k below the smallest organ's held-out count, so that a full vote of same-organ
        # neighbours is possible (3 held-out images per organ: k = 2)
        k = max(1, min(5, int(np.bincount(self.labels).min()) - 1))
        if bool(torch.isfinite(E).all()) and float(E.norm(dim=1).min()) > 0:
            with warnings.catch_warnings():  # k-means on collapsed embeddings: fewer distinct points
                warnings.simplefilter("ignore", ConvergenceWarning)
                sep = organ_separation(E.numpy(), self.labels, n_neighbors=k, random_state=0)
            out["monitor_knn_accuracy"] = sep["knn_accuracy"]
            out["monitor_nmi"] = sep["nmi"]
        else:
            out["monitor_knn_accuracy"] = out["monitor_nmi"] = float("nan")
        out.update(within_organ_spread(U, self.labels))
        if logits and intra_loss is not None:
            t = torch.cat(logits)
            c = intra_loss.center.detach().float().cpu()
            logp = intra_loss.teacher_log_probs(t, teacher_temp)
            p = logp.exp()
            per_image = -(p * logp).sum(1).mean()
            marginal = p.mean(0)
            h_marginal = -(marginal * marginal.clamp_min(1e-30).log()).sum()
            out["teacher_entropy"] = float(per_image)
            out["teacher_mi"] = float(h_marginal - per_image)
            out["ln_k"] = math.log(t.shape[1])
            out["center_norm"] = float(c.norm())
        return out


def within_organ_spread(U: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """``organ_spread`` and ``organ_rank`` (see the module doc) of unit vectors ``U`` with organ ``labels``.

    Examples
    --------
    >>> U = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    >>> out = within_organ_spread(U, np.array([0, 0, 1, 1]))
    >>> round(out["organ_spread"], 3), round(out["organ_rank"], 3)
    (0.026, 0.5)
    """
    spreads, ranks = [], []
    for organ in np.unique(labels):
        V = U[torch.as_tensor(labels == organ)]
        spreads.append(1.0 - float(V.mean(0).norm()))
        s = torch.linalg.svdvals(V - V.mean(0))
        if len(V) < 2 or float(s.sum()) <= 0:
            ranks.append(0.0)
            continue
        p = s / s.sum()
        ranks.append(float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum())))
    return {"organ_spread": float(np.mean(spreads)), "organ_rank": float(np.mean(ranks))}


def collapse_warnings(m: dict[str, float]) -> list[str]:
    """Plain-language warnings for the monitor figures ``m`` (empty when they look healthy)."""
    msgs = []
    if "teacher_entropy" in m and m["teacher_entropy"] > UNIFORM_ENTROPY_RATIO * m["ln_k"]:
        msgs.append(
            f"the teacher's intra-organ targets are nearly uniform (entropy {m['teacher_entropy']:.2f} of "
            f"ln K = {m['ln_k']:.2f}): the intra-organ branch has little to distil"
        )
    if "teacher_mi" in m and m["teacher_mi"] < MIN_TEACHER_MI:
        msgs.append(
            f"the teacher gives nearly every image the same target (information {m['teacher_mi']:.3f} nats "
            f"< {MIN_TEACHER_MI}): collapse"
        )
    if m.get("embed_std", 1.0) < MIN_EMBED_STD:
        msgs.append(
            f"the teacher maps nearly every image to the same embedding (normalised std {m['embed_std']:.3f} "
            f"< {MIN_EMBED_STD}): collapse"
        )
    return msgs
