"""timm backbones as pooled feature extractors.

A backbone is any timm model created with ``num_classes=0``; its pooled (pre-logits)
output is the embedding. Hub weights are never fetched: codafeat weights come from
safetensors files, installed weights packages, or training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from .._defaults import FEATURE_KINDS, FEATURES, GRID_SIZE, POOLING
from .preprocess import GrayToInput

POOLINGS = ("avg", "max", "avgmax")


def check_model_name(name: Any) -> str:
    """``name`` if timm knows it, else a ValueError with examples.

    Examples
    --------
    >>> check_model_name("test_convnext")
    'test_convnext'
    """
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(
            f"backbone {name!r} is not a timm model name (see timm.list_models(), e.g. "
            "'convnext_base', 'convnext_atto', 'test_convnext')"
        )
    return name


def create_backbone(name: str, *, pooling: str = POOLING, in_chans: int = 3, drop_path_rate: float = 0.0) -> nn.Module:
    """Create the timm model ``name`` without classifier, randomly initialised.

    ``drop_path_rate`` is timm's stochastic-depth rate (active in training mode only).
    Models that take timm's ``dynamic_img_size`` (vision transformers) are made with it and
    ``dynamic_img_pad``, so they accept every input side, as convolutional backbones do: the
    pretrainer feeds local crops smaller than its global views.

    Raises
    ------
    ValueError
        If ``name`` is not a timm model or ``pooling`` is not supported.

    Examples
    --------
    >>> import torch
    >>> net = create_backbone("test_convnext")
    >>> net(torch.zeros(1, 3, 32, 32)).shape == (1, embed_dim(net))
    True
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    check_model_name(name)
    kwargs = {"drop_path_rate": float(drop_path_rate)} if drop_path_rate else {}
    try:  # vision transformers: any input side (local crops are smaller than global views)
        return timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            global_pool=pooling,
            in_chans=in_chans,
            dynamic_img_size=True,
            dynamic_img_pad=True,
            **kwargs,
        )
    except TypeError as exc:
        if "dynamic_img" not in str(exc):
            raise
    return timm.create_model(name, pretrained=False, num_classes=0, global_pool=pooling, in_chans=in_chans, **kwargs)


def create_feature_backbone(name: str, strides: Sequence[int], *, in_chans: int = 3) -> nn.Module:
    """timm ``features_only`` model of ``name`` returning the maps of the given strides.

    Randomly initialised (hub weights are never fetched). Where a backbone has several
    levels of one stride, the deepest is taken.

    Raises
    ------
    ValueError
        If ``name`` is not a timm model, cannot give feature maps, or lacks a stride.

    Examples
    --------
    >>> enc = create_feature_backbone("test_convnext", (4, 8, 16, 32))
    >>> enc.feature_info.reduction()
    [4, 8, 16, 32]
    """
    check_model_name(name)
    try:
        enc = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans)
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise ValueError(f"backbone {name!r} cannot be used as a multi-scale encoder (features_only): {exc}") from exc
    reductions = [int(i["reduction"]) for i in enc.feature_info.info]
    if [reductions[i] for i in enc.feature_info.out_indices] == list(strides):
        return enc
    wanted = []
    for s in strides:
        if s not in reductions:
            raise ValueError(f"backbone {name!r} has feature strides {reductions}; needed: {list(strides)}")
        wanted.append(len(reductions) - 1 - reductions[::-1].index(s))  # deepest level of that stride
    return timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans, out_indices=tuple(wanted))


def embed_dim(model: nn.Module) -> int:
    """Size of the pooled embedding of a backbone made by :func:`create_backbone`."""
    return int(model.num_features)


def total_stride(model: nn.Module) -> int:
    """The downsampling of a timm model's last feature map (32 for ConvNeXt), 1 if unknown.

    The smallest input side the model accepts.

    Examples
    --------
    >>> total_stride(create_backbone("test_convnext"))
    32
    """
    info = getattr(model, "feature_info", None)
    if not info:
        return 1
    last = info[-1] if isinstance(info, list) else info.info[-1]
    return int(last["reduction"])


def check_input_size(model: nn.Module, name: str, **sizes: int) -> None:
    """Refuse input sides smaller than the backbone's total stride, naming the parameter.

    The one lower bound on ``image_size`` / ``local_size`` of every estimator.

    Examples
    --------
    >>> check_input_size(create_backbone("test_convnext"), "test_convnext", image_size=16)
    Traceback (most recent call last):
    ...
    ValueError: image_size=16 must be at least the total stride (32) of backbone 'test_convnext'
    """
    stride = total_stride(model)
    for param, size in sizes.items():
        if int(size) < stride:
            raise ValueError(f"{param}={size} must be at least the total stride ({stride}) of backbone {name!r}")


def state_mismatch(
    own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, unexpected: bool = True
) -> list[str]:
    """What keeps ``state`` from loading into a module whose ``state_dict`` is ``own``.

    Empty when it fits. Missing keys, unexpected keys (when ``unexpected``) and shape
    mismatches, each with examples.

    Examples
    --------
    >>> import torch
    >>> for part in state_mismatch({"a": torch.zeros(2)}, {"a": torch.zeros(3), "b": torch.zeros(1)}):
    ...     print(part)
    1 unexpected tensor(s) (e.g. ['b'])
    1 tensor(s) of the wrong shape (e.g. a: weights (3,), model (2,))
    """
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own)) if unexpected else []
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[:3]})")
    if extra:
        parts.append(f"{len(extra)} unexpected tensor(s) (e.g. {extra[:3]})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} tensor(s) of the wrong shape (e.g. {k}: weights {tuple(state[k].shape)}, "
            f"model {tuple(own[k].shape)})"
        )
    return parts


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model`` strictly, with an error that names ``source``."""
    parts = state_mismatch(model.state_dict(), state)
    if parts:
        raise ValueError(f"{source}: tensors do not match the backbone of its config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _global_pool(x: torch.Tensor, pooling: str, size: int = 1) -> torch.Tensor:
    """``x`` (B, C, H, W) pooled to (B, C, size, size) as timm's ``pooling`` does (avgmax: their mean)."""
    avg = F.adaptive_avg_pool2d(x, size) if pooling in ("avg", "avgmax") else None
    mx = F.adaptive_max_pool2d(x, size) if pooling in ("max", "avgmax") else None
    if avg is not None and mx is not None:
        return 0.5 * (avg + mx)
    return avg if avg is not None else mx


def _head_norm(backbone: nn.Module) -> nn.Module | None:
    """The norm a timm head applies to the pooled map (ConvNeXt's ``LayerNorm2d``), or None."""
    norm = getattr(getattr(backbone, "head", None), "norm", None)
    return norm if isinstance(norm, LayerNorm2d) else None


def feature_dim(backbone: nn.Module, features: str = FEATURES, grid_size: int = GRID_SIZE) -> int:
    """Length of the vectors :class:`FeatureExtractor` returns for ``features`` (see there).

    Examples
    --------
    >>> net = create_backbone("convnext_atto")
    >>> feature_dim(net), feature_dim(net, "stages"), feature_dim(net, "grid", 2)
    (320, 600, 1280)
    """
    check_features(features, grid_size)
    if features == "pooled":
        return embed_dim(backbone)
    if features == "grid":
        return embed_dim(backbone) * int(grid_size) ** 2
    return sum(_stage_channels(backbone)[:-1]) + embed_dim(backbone)


def _stage_channels(backbone: nn.Module) -> list[int]:
    info = getattr(backbone, "feature_info", None)
    if not info or not hasattr(backbone, "forward_intermediates"):
        raise ValueError(
            f"features='stages' and 'grid' need a timm backbone with feature stages (forward_intermediates), "
            f"such as ConvNeXt; {type(backbone).__name__} has none: use features='pooled'"
        )
    return [int(i["num_chs"]) for i in (info if isinstance(info, list) else info.info)]


def check_features(features: str, grid_size: int) -> None:
    """Raise ``ValueError`` for a ``features`` layout or ``grid_size`` that :class:`FeatureExtractor` lacks."""
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
    if not isinstance(grid_size, int) or isinstance(grid_size, bool) or not 1 <= grid_size <= 16:
        raise ValueError(f"grid_size must be an int in [1, 16], got {grid_size!r}")


class FeatureExtractor(nn.Module):
    """Preprocessing (:class:`~codafeat.nn.preprocess.GrayToInput`) + backbone -> a feature vector.

    Input ``(B, 1, H, W)`` in [0, 1]; output ``(B, feature_dim)``. ``features`` chooses what
    the vector holds:

    - ``"pooled"``: the backbone's pooled embedding (timm's pre-logits output), ``embed_dim``
      values.
    - ``"stages"``: the globally pooled output of every stage, first to last, concatenated
      (DINOv2's linear evaluation concatenates several blocks' outputs); the last part is the
      pooled embedding. Earlier stages keep finer, less abstract detail.
    - ``"grid"``: the last feature map pooled to a ``grid_size`` x ``grid_size`` grid
      (with the head's norm at each cell, as the pooled embedding has it), flattened channel
      by channel: where things are, which a global average throws away. ``grid_size=1`` is
      the pooled embedding.

    The global pooling of every part is the backbone's (``"avg"``, ``"max"`` or
    ``"avgmax"``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean,
        std,
        in_chans: int = 3,
        *,
        features: str = FEATURES,
        grid_size: int = GRID_SIZE,
        pooling: str = POOLING,
    ) -> None:
        super().__init__()
        check_features(features, grid_size)
        if features != "pooled":
            _stage_channels(backbone)  # raises for a backbone without stages
        self.pre = GrayToInput(mean, std, in_chans)
        self.backbone = backbone
        self.features, self.grid_size, self.pooling = features, int(grid_size), pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        if self.features == "pooled":
            return self.backbone(x)
        last, stages = self.backbone.forward_intermediates(x)
        if self.features == "grid":
            cells = _global_pool(last, self.pooling, self.grid_size)
            norm = _head_norm(self.backbone)
            return (norm(cells) if norm is not None else cells).flatten(1)
        pooled = [_global_pool(s, self.pooling).flatten(1) for s in stages[:-1]]
        return torch.cat([*pooled, self.backbone.forward_head(last, pre_logits=True)], dim=1)
