"""KoLeo regulariser: spread a batch of embeddings by pushing each away from its nearest neighbour.

The Kozachenko-Leonenko differential-entropy estimator (Sablayrolles et al. 2019, "Spreading
vectors for similarity search"), as DINOv2 (Oquab et al. 2023) adds it to self-distillation::

    L = -1/n  sum_i  log( min_{j != i} || x_i - x_j || + eps ),   x = l2-normalised rows

It is not in the Coda paper. Its use here: the intra-organ branch's failure mode at small
compute is DINO's uniform collapse. Every image's bottleneck vector (the l2-normalised MLP
output before the prototype layer) drifts towards the same direction, so the centred
teacher logits stop differing between images and the targets become uniform. KoLeo on that
bottleneck keeps the vectors of one batch apart (``CodaPretrainer(koleo_weight=...)``; the
ablation is in ``benchmarks/RESULTS.md``, "Small-compute recipe").

The nearest neighbour is chosen without gradient (DINOv2's form); the distance to it carries
the gradient. Computation is in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """``-mean_i log(d_i + eps)``, ``d_i`` the distance of row ``i`` to its nearest other row.

    Parameters
    ----------
    eps : float, default=1e-8
        Added to every distance (and used in the normalisation), so that duplicate rows give
        a large finite loss instead of infinity.

    Examples
    --------
    >>> import torch
    >>> loss = KoLeoLoss()
    >>> spread = torch.eye(4)  # four orthogonal unit vectors: every neighbour at sqrt(2)
    >>> round(loss(spread).item(), 4) == round(-torch.log(torch.tensor(2.0).sqrt()).item(), 4)
    True
    >>> bool(loss(torch.ones(4, 3) + 1e-3 * torch.randn(4, 3)) > loss(spread))  # bunched up: larger
    True
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if not float(eps) > 0:
            raise ValueError(f"KoLeoLoss: eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar loss of the rows of ``x`` (shape ``(n, d)``, ``n >= 2``)."""
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"KoLeoLoss: x must have shape (n >= 2, d), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = F.normalize(x.float(), dim=-1, eps=self.eps)
            with torch.no_grad():
                sim = z @ z.t()
                sim.fill_diagonal_(-2.0)  # never one's own neighbour
                nearest = sim.argmax(dim=1)
            dist = F.pairwise_distance(z, z[nearest], eps=self.eps)
            return -torch.log(dist + self.eps).mean()
