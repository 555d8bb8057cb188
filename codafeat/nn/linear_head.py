"""A pretrained backbone with a linear layer on its pooled features: the paper's transfer network.

"Appending a task-specific fully connected layer to pretrained models" (Coda, Fig. 3 and
Table 1): the encoder is the backbone as :class:`~codafeat.CodaEncoder` runs it (grey-to-input
preprocessing, timm model, global pooling), the head one ``nn.Linear``. The head starts at
zero: every class starts with the same logit (uniform probabilities, a regression at the
targets' mean), and the result depends on the random state only through the batch order and
the augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._defaults import POOLING
from .backbone import FeatureExtractor, create_backbone, embed_dim, load_backbone_state


class LinearHeadNet(nn.Module):
    """``head(encoder(x))``: ``(B, 1, H, W)`` images in [0, 1] -> ``(B, n_outputs)``.

    Attributes
    ----------
    encoder : FeatureExtractor
        Preprocessing + backbone -> pooled features (what :class:`~codafeat.CodaEncoder` embeds).
    head : nn.Linear
        ``embed_dim -> n_outputs``, initialised at zero.

    Examples
    --------
    >>> import torch
    >>> net = build_linear_head_net("test_convnext", 3, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> net(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 3])
    """

    def __init__(self, encoder: FeatureExtractor, n_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embed_dim(encoder.backbone), int(n_outputs))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_linear_head_net(
    backbone: str,
    n_outputs: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    pooling: str = POOLING,
    state: dict[str, torch.Tensor] | None = None,
    source: str = "random initialisation",
) -> LinearHeadNet:
    """The timm model ``backbone`` (with ``state`` loaded strictly, if given) and a zero head.

    Raises
    ------
    ValueError
        An unknown model or pooling, or ``state`` that does not fit the backbone (naming
        ``source``).
    """
    net = create_backbone(backbone, pooling=pooling, in_chans=in_chans)
    if state is not None:
        load_backbone_state(net, state, source=source)
    return LinearHeadNet(FeatureExtractor(net, mean, std, in_chans), n_outputs)
