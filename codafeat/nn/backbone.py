"""timm backbones as pooled feature extractors.

A backbone is any timm model created with ``num_classes=0``; its pooled (pre-logits)
output is the embedding. Hub weights are never fetched: codafeat weights come from
safetensors files, installed weights packages, or training.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

#: Mean/std used when no weights say otherwise: timm's ImageNet defaults, so that an
#: ImageNet-initialised backbone sees the statistics it was trained with.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
POOLINGS = ("avg", "max", "avgmax")


def create_backbone(name: str, *, pooling: str = "avg", in_chans: int = 3, drop_path_rate: float = 0.0) -> nn.Module:
    """Create the timm model ``name`` without classifier, randomly initialised.

    ``drop_path_rate`` is timm's stochastic-depth rate (active in training mode only).

    Raises
    ------
    ValueError
        If ``name`` is not a timm model or ``pooling`` is not supported.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(
            f"backbone {name!r} is not a timm model name (see timm.list_models(), e.g. "
            "'convnext_base', 'convnext_atto', 'test_convnext')"
        )
    kwargs = {"drop_path_rate": float(drop_path_rate)} if drop_path_rate else {}
    return timm.create_model(name, pretrained=False, num_classes=0, global_pool=pooling, in_chans=in_chans, **kwargs)


def embed_dim(model: nn.Module) -> int:
    """Size of the pooled embedding of a backbone made by :func:`create_backbone`."""
    return int(getattr(model, "num_features"))


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model`` strictly, with an error that names ``source``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} tensor(s) of the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        raise ValueError(f"{source}: tensors do not match the backbone of its config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


class FeatureExtractor(nn.Module):
    """Preprocessing (:class:`~codafeat.nn.preprocess.GrayToInput`) + backbone -> pooled features.

    Input ``(B, 1, H, W)`` in [0, 1]; output ``(B, embed_dim)``.
    """

    def __init__(self, backbone: nn.Module, mean, std, in_chans: int = 3) -> None:
        super().__init__()
        from .preprocess import GrayToInput

        self.pre = GrayToInput(mean, std, in_chans)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.pre(x))
