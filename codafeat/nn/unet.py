"""U-Net on a timm backbone: multi-scale encoder (strides 4/8/16/32) + random decoder.

The encoder is ``timm.create_model(name, features_only=True)`` restricted to the feature
levels of stride 4, 8, 16 and 32. codafeat weights hold the *classification* backbone
(``create_backbone(name)``, no classifier) whose ``state_dict`` keys differ from the
``features_only`` model's: timm flattens the top-level sequential containers, so
``stem.0.weight`` becomes ``stem_0.weight`` and ``stages.1.blocks.0...`` becomes
``stages_1.blocks.0...``; and the classification model's ``head.*`` tensors (ConvNeXt's
``head.norm``, applied after global pooling) have no place in a feature pyramid.
:func:`map_encoder_keys` pairs the keys one to one and :func:`load_encoder_state` loads
them, failing on any encoder tensor it cannot fill.

The decoder (:class:`UNetDecoder`) is randomly initialised. Each step upsamples
bilinearly by 2, concatenates the skip connection and applies two 3x3 conv + GroupNorm +
ReLU layers (GroupNorm, not BatchNorm: few-shot fine-tuning runs with batches of 1-2).
ConvNeXt's stem already has stride 4, so there is no encoder feature at strides 2 and 1:
two further up-steps bring the stride-4 map to full resolution, with the (downscaled)
input image as their skip, which gives the last layers the image's edges. The output is
``(B, n_classes, H, W)`` logits at the input resolution, for any ``H, W >= 32``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._defaults import DECODER_CHANNELS
from .backbone import create_feature_backbone, state_mismatch
from .preprocess import GrayToInput

logger = logging.getLogger(__name__)

#: Feature strides taken from the encoder, finest first.
ENCODER_STRIDES = (4, 8, 16, 32)
#: Default decoder widths: strides 16, 8, 4, 2, 1.
DEFAULT_DECODER_CHANNELS = DECODER_CHANNELS
#: Prefixes of classification-backbone tensors a feature pyramid does not use.
UNUSED_PREFIXES = ("head.",)


# --------------------------------------------------------------------------- encoder
def create_encoder(name: str, *, in_chans: int = 3) -> nn.Module:
    """timm ``features_only`` model of ``name`` returning the stride 4/8/16/32 maps.

    Randomly initialised (hub weights are never fetched); see
    :func:`~codafeat.nn.backbone.create_feature_backbone`.

    Raises
    ------
    ValueError
        If ``name`` is not a timm model, cannot give feature maps, or lacks one of the
        strides 4, 8, 16, 32.
    """
    return create_feature_backbone(name, ENCODER_STRIDES, in_chans=in_chans)


def encoder_channels(encoder: nn.Module) -> list[int]:
    """Channels of the encoder's feature maps, finest first."""
    return [int(c) for c in encoder.feature_info.channels()]


def map_encoder_keys(encoder_keys: Sequence[str], backbone_keys: Sequence[str]) -> dict[str, str]:
    """Pair each ``features_only`` key with the classification-backbone key it comes from.

    A key maps to itself when the backbone has it; otherwise the flattened name
    (``stages_1.x`` for ``stages.1.x``: one ``_`` of the first component stands for a
    ``.``) or a ``model.`` wrapper prefix is undone. Keys without a unique partner are
    left out of the result (the caller reports them).

    Returns
    -------
    dict
        ``{encoder_key: backbone_key}``, one to one.
    """
    have = set(backbone_keys)
    mapping: dict[str, str] = {}
    for key in encoder_keys:
        if key in have:
            mapping[key] = key
            continue
        first, dot, rest = key.partition(".")
        candidates = []
        for i, ch in enumerate(first):
            if ch == "_":
                candidates.append(first[:i] + "." + first[i + 1 :] + dot + rest)
        if key.startswith("model."):
            candidates.append(key[len("model.") :])
        found = [c for c in candidates if c in have]
        if len(found) == 1:
            mapping[key] = found[0]
    targets = list(mapping.values())
    if len(set(targets)) != len(targets):
        dup = sorted({t for t in targets if targets.count(t) > 1})
        raise ValueError(f"encoder keys map ambiguously onto backbone tensors, e.g. {dup[:3]}")
    return mapping


def load_encoder_state(encoder: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> list[str]:
    """Copy a classification-backbone ``state`` into a ``features_only`` ``encoder``.

    Every encoder tensor must be filled, with the right shape. Backbone tensors under
    :data:`UNUSED_PREFIXES` (the classifier-level ``head.*``) are expected to be unused;
    any other unused tensor (a layer after the last feature level, which ``features_only``
    drops) is reported with a warning.

    Returns
    -------
    list of str
        The backbone keys that were not loaded, sorted.

    Raises
    ------
    ValueError
        If an encoder tensor has no partner in ``state`` or a partner of another shape.
    """
    own = encoder.state_dict()
    mapping = map_encoder_keys(list(own), list(state))
    parts = state_mismatch(own, {k: state[b] for k, b in mapping.items()}, unexpected=False)
    if parts:
        raise ValueError(f"{source}: the weights do not fit the encoder: " + "; ".join(parts))
    encoder.load_state_dict({k: state[b] for k, b in mapping.items()}, strict=True)
    unused = sorted(set(state) - set(mapping.values()))
    odd = [k for k in unused if not k.startswith(UNUSED_PREFIXES)]
    if odd:
        logger.warning(
            "%s: %d backbone tensor(s) after the last feature level are not used by the U-Net encoder (e.g. %s)",
            source,
            len(odd),
            odd[:3],
        )
    logger.debug("%s: unused classifier-level tensors: %s", source, [k for k in unused if k not in odd])
    return unused


# --------------------------------------------------------------------------- decoder
def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv, GroupNorm, ReLU) layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_ch), out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_ch), out_ch),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Upsample to the skip's size (bilinear), concatenate the skip, :class:`ConvBlock`."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBlock(in_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip.to(x.dtype)], dim=1))


class UNetDecoder(nn.Module):
    """Decoder from the stride 4/8/16/32 maps (and the input image) to full-resolution logits.

    Parameters
    ----------
    enc_channels : sequence of 4 int
        Channels of the encoder maps at strides 4, 8, 16, 32.
    n_classes : int
        Output channels.
    channels : sequence of 5 int
        Widths after the up-steps to strides 16, 8, 4, 2 and 1.
    image_channels : int, default=1
        Channels of the image given as the skip of the last two up-steps.
    """

    def __init__(
        self,
        enc_channels: Sequence[int],
        n_classes: int,
        channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        image_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(enc_channels) != 4:
            raise ValueError(f"enc_channels must have 4 values (strides 4..32), got {list(enc_channels)}")
        if len(channels) != 5 or any(int(c) < 1 for c in channels):
            raise ValueError(f"decoder channels must be 5 positive widths, got {list(channels)}")
        c4, c8, c16, c32 = (int(c) for c in enc_channels)
        d16, d8, d4, d2, d1 = (int(c) for c in channels)
        self.up16 = UpBlock(c32, c16, d16)
        self.up8 = UpBlock(d16, c8, d8)
        self.up4 = UpBlock(d8, c4, d4)
        self.up2 = UpBlock(d4, image_channels, d2)  # beyond the stride-4 stem: no encoder skip
        self.up1 = UpBlock(d2, image_channels, d1)
        self.head = nn.Conv2d(d1, int(n_classes), 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (ReLU gain), zero biases, unit GroupNorm."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01)

    def forward(self, feats: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        f4, f8, f16, f32 = feats
        h, w = image.shape[-2:]
        half = F.interpolate(image, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=False)
        x = self.up16(f32, f16)
        x = self.up8(x, f8)
        x = self.up4(x, f4)
        x = self.up2(x, half)
        x = self.up1(x, image)
        return self.head(x)


# --------------------------------------------------------------------------- model
class UNet(nn.Module):
    """Preprocessing + multi-scale encoder + :class:`UNetDecoder`.

    Input ``(B, 1, H, W)`` images in [0, 1] (one channel, replicated and normalised by
    :class:`~codafeat.nn.preprocess.GrayToInput`); output ``(B, n_classes, H, W)`` logits.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int = 3,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        self.pre = GrayToInput(mean, std, in_chans)
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder_channels(encoder), n_classes, decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"UNet expects (B, 1, H, W) images, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"UNet needs images of at least 32x32 (stride 32), got {tuple(x.shape[-2:])}")
        feats = self.encoder(self.pre(x))
        return self.decoder(feats, x)


def build_unet(
    backbone: str,
    n_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    state: Mapping[str, torch.Tensor] | None = None,
    source: str = "weights",
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
) -> UNet:
    """A :class:`UNet` whose encoder holds ``state`` (a classification-backbone state dict).

    With ``state=None`` the encoder keeps timm's random initialisation. The decoder is
    always randomly initialised (seed torch's RNG beforehand for reproducibility).
    """
    encoder = create_encoder(backbone, in_chans=in_chans)
    if state is not None:
        load_encoder_state(encoder, state, source=source)
    return UNet(encoder, n_classes, mean, std, in_chans, decoder_channels)
