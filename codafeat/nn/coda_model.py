"""The Coda network: one backbone shared by two DINO-style projection heads.

Student and teacher are two instances of :class:`CodaNetwork` (the teacher an EMA copy).
The inter-organ head ``head_org`` and the intra-organ head ``head_ins`` are created only
when the objective's terms use them (:class:`~codafeat._train.objective.Terms`), so an
ablation trains no idle parameters. The network returns named outputs
(:class:`NetworkOutputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .._defaults import HEAD_BOTTLENECK_DIM, HEAD_HIDDEN_DIM, HEAD_OUT_DIM
from .backbone import FeatureExtractor, create_backbone, embed_dim
from .heads import DINOHead


class NetworkOutputs(NamedTuple):
    """What :class:`CodaNetwork` returns: the inter-organ output, the intra-organ output and
    the intra-organ bottleneck (each ``None`` when its head is absent or it was not asked for)."""

    org: torch.Tensor | None
    ins: torch.Tensor | None
    bottleneck: torch.Tensor | None = None


class CodaNetwork(nn.Module):
    """Backbone (with greyscale preprocessing) + optional inter-/intra-organ heads.

    Parameters
    ----------
    backbone : str
        timm model name.
    mean, std : sequence of float
        Input normalisation (per backbone channel).
    with_org, with_ins : bool
        Whether to build the inter-organ and intra-organ heads.
    head_out_dim, head_hidden_dim, head_bottleneck_dim : int
        DINO head sizes (paper: out 65,536, hidden 2,048; DINO: bottleneck 256).
    drop_path_rate : float, default=0.0
        Stochastic depth of the backbone (training mode only; the EMA teacher runs in eval
        mode, so it never drops paths).
    head_fp32 : bool, default=False
        The heads' last layers in float32 under autocast (see :class:`~codafeat.nn.heads.DINOHead`).
    """

    def __init__(
        self,
        backbone: str,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        with_org: bool = True,
        with_ins: bool = True,
        head_out_dim: int = HEAD_OUT_DIM,
        head_hidden_dim: int = HEAD_HIDDEN_DIM,
        head_bottleneck_dim: int = HEAD_BOTTLENECK_DIM,
        drop_path_rate: float = 0.0,
        head_fp32: bool = False,
    ) -> None:
        super().__init__()
        net = create_backbone(backbone, drop_path_rate=drop_path_rate)
        self.encoder = FeatureExtractor(net, mean, std)
        dim = embed_dim(net)
        kw = dict(
            out_dim=head_out_dim,
            hidden_dim=head_hidden_dim,
            bottleneck_dim=head_bottleneck_dim,
            last_layer_fp32=head_fp32,
        )
        self.head_org = DINOHead(dim, **kw) if with_org else None
        self.head_ins = DINOHead(dim, **kw) if with_ins else None

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    def forward(
        self,
        global_view: torch.Tensor,
        local_views: torch.Tensor | None = None,
        *,
        ins_on_global: bool = False,
        return_bottleneck: bool = False,
    ):
        """:class:`NetworkOutputs` ``(org, ins, bottleneck)``.

        Teacher pass: ``local_views=None``; the intra-organ head is applied to the global
        view(s). Student pass: with ``local_views`` the intra-organ head sees the local
        crops only (Coda's asymmetric form), or, with ``ins_on_global=True``, the global
        views followed by the crops (DINO's symmetric form): ``ins`` is then
        ``head_ins(cat[encoder(global_view), encoder(local_views)])``.

        With ``return_bottleneck=True``, ``bottleneck`` is the intra-organ head's
        l2-normalised bottleneck of the global view(s), ``(len(global_view), bottleneck)``
        (``None`` without that head), for :class:`~codafeat.losses.KoLeoLoss`.
        """
        feats = self.encoder(global_view)
        z_org = self.head_org(feats) if self.head_org is not None else None
        if self.head_ins is None:
            return NetworkOutputs(z_org, None, None)
        n_global = feats.shape[0]
        if local_views is None:
            z_ins, bottleneck = self.head_ins(feats, return_bottleneck=True)
        else:
            local_feats = self.encoder(local_views)
            if ins_on_global:
                z_ins, bottleneck = self.head_ins(torch.cat([feats, local_feats]), return_bottleneck=True)
            else:
                z_ins = self.head_ins(local_feats)
                # the asymmetric form sends no global view through this head; a regulariser gets one pass
                bottleneck = self.head_ins(feats, return_bottleneck=True)[1] if return_bottleneck else None
        if not return_bottleneck:
            return NetworkOutputs(z_org, z_ins, None)
        return NetworkOutputs(z_org, z_ins, bottleneck[:n_global])

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters of the heads' weight-normalised output layers (frozen in epoch 0, DINO)."""
        out: list[nn.Parameter] = []
        for head in (self.head_org, self.head_ins):
            if head is not None:
                out.extend(head.last_layer_parameters())
        return out
