"""DINO-style projection head: MLP -> bottleneck -> l2-normalise -> weight-normalised linear.

Coda (paper, Sec. 3) uses two such heads per network, one per branch: "3-layer MLPs with a
hidden dimension of 2048, l2 normalization, and a weight-normalized fully connected layer
with an output dimension of 65,536". The details the paper leaves open follow DINO
(Caron et al. 2021, ``vision_transformer.DINOHead``): GELU activations, bottleneck 256,
truncated-normal (std 0.02) initialisation with zero biases for the MLP, PyTorch's default
``nn.Linear`` initialisation for the direction of the last layer, its norm ``g`` fixed to 1
(``norm_last_layer=True``), and the last layer frozen during the first epoch (the training
loop zeroes its gradients, see :meth:`DINOHead.last_layer_parameters`).

The last layer stores plain parameters (direction ``weight_v`` and, only when it is learnt,
norm ``weight_g``) instead of a ``torch.nn.utils`` parametrisation: the EMA teacher, DDP and
checkpoints then see ordinary tensors. Its forward uses ``torch._weight_norm``, the fused
kernel behind :func:`torch.nn.utils.parametrizations.weight_norm` (same numbers, same
gradients, tested), which on CPU costs about a sixth of the unfused
``F.normalize(v, dim=1)``. See ``benchmarks/head_cost.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._defaults import HEAD_BOTTLENECK_DIM, HEAD_HIDDEN_DIM, HEAD_OUT_DIM

__all__ = ["DINOHead", "WeightNormLinear", "cancel_last_layer_grad"]


class WeightNormLinear(nn.Module):
    """``y = x @ W.T`` with rows ``W_k = g_k * v_k / ||v_k||`` (Salimans & Kingma 2016), no bias.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.
    learn_norm : bool, default=False
        If False (DINO's ``norm_last_layer=True``) every row norm ``g_k`` is fixed to 1, is
        not a parameter, and the rows of the effective weight are unit vectors. If True,
        ``weight_g`` (shape ``(out_features, 1)``, initialised to 1) is learnt.
    """

    def __init__(self, in_features: int, out_features: int, *, learn_norm: bool = False) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight_v = nn.Parameter(torch.empty(self.out_features, self.in_features))
        # The default nn.Linear initialisation, as in DINO (its head's last layer is created
        # after the truncated-normal init is applied). Only the direction matters for the
        # output, but the scale of v sets the size of the gradient steps.
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        if learn_norm:
            self.weight_g = nn.Parameter(torch.ones(self.out_features, 1))
        else:
            self.register_parameter("weight_g", None)

    @property
    def learn_norm(self) -> bool:
        return self.weight_g is not None

    def weight(self) -> torch.Tensor:
        """The effective weight ``(out_features, in_features)``."""
        g = self.weight_g if self.weight_g is not None else self.weight_v.new_ones(self.out_features, 1)
        # dim=0: one norm per output row; fused forward and backward kernels on CPU and CUDA.
        return torch._weight_norm(self.weight_v, g, 0)

    #: Run in float32 even under autocast (``DINOHead(last_layer_fp32=True)``): with 65,536
    #: outputs, bf16 logits lose the small differences that the teacher's sharpened softmax
    #: turns into targets.
    fp32 = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp32 and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return F.linear(x.float(), self.weight().float())
        return F.linear(x, self.weight())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, learn_norm={self.learn_norm}"


def _mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_layers: int) -> nn.Sequential:
    if n_layers == 1:
        return nn.Sequential(nn.Linear(in_dim, bottleneck_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(n_layers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """Projection head: ``n_layers``-layer MLP -> l2-normalise -> :class:`WeightNormLinear`.

    Parameters
    ----------
    in_dim : int
        Size of the backbone's pooled features.
    out_dim : int, default=65536
        Number of outputs (paper: 65,536).
    hidden_dim : int, default=2048
        Width of the MLP's hidden layers (paper: 2048).
    bottleneck_dim : int, default=256
        Size of the MLP output that is l2-normalised (DINO's default; the paper is silent).
    n_layers : int, default=3
        Number of linear layers in the MLP (paper: 3), GELU between them.
    norm_last_layer : bool, default=True
        Fix the row norms of the last layer to 1 (DINO's default), which keeps training stable.
    last_layer_fp32 : bool, default=False
        Compute the last layer in float32 under autocast (mixed-precision GPU training).

    Examples
    --------
    >>> import torch
    >>> head = DINOHead(64, out_dim=128, hidden_dim=32, bottleneck_dim=16)
    >>> head(torch.randn(5, 64)).shape
    torch.Size([5, 128])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = HEAD_OUT_DIM,
        hidden_dim: int = HEAD_HIDDEN_DIM,
        bottleneck_dim: int = HEAD_BOTTLENECK_DIM,
        n_layers: int = 3,
        norm_last_layer: bool = True,
        last_layer_fp32: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("n_layers", n_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DINOHead: {name} must be a positive integer, got {value!r}")
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, n_layers)
        self.mlp.apply(self._init_weights)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)
        self.last_layer.fp32 = bool(last_layer_fp32)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def out_dim(self) -> int:
        return self.last_layer.out_features

    def forward(self, x: torch.Tensor, *, return_bottleneck: bool = False):
        """``(B, in_dim)`` features -> ``(B, out_dim)`` outputs.

        With ``return_bottleneck=True``: ``(outputs, z)``, ``z`` the l2-normalised
        ``(B, bottleneck_dim)`` MLP output that the last layer projects (for a regulariser
        such as :class:`~codafeat.losses.KoLeoLoss`).
        """
        z = F.normalize(self.mlp(x), dim=-1)
        out = self.last_layer(z)
        return (out, z) if return_bottleneck else out

    def last_layer_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the last layer, whose gradients DINO drops in the first epoch."""
        return self.last_layer.parameters()


def cancel_last_layer_grad(*heads: nn.Module) -> None:
    """Drop (set to ``None``) the gradients of the heads' last layers, as DINO does.

    With ``grad=None`` AdamW skips the parameter entirely (no step, no weight decay), which is
    what freezing the last layer for the first ``freeze_last_layer`` epochs means.
    """
    for head in heads:
        for p in head.last_layer_parameters():  # type: ignore[operator]
            p.grad = None
