"""U-Net on a timm backbone: key mapping, exact weight transfer, shapes, decoder init."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from codafeat.nn.backbone import create_backbone
from codafeat.nn.unet import (
    UNet,
    UNetDecoder,
    build_unet,
    create_encoder,
    encoder_channels,
    load_encoder_state,
    map_encoder_keys,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _random_backbone_state(name: str = "test_convnext", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = create_backbone(name)
    # timm initialises some tensors to constants (norm weights 1, biases 0, gamma 1e-6):
    # make every tensor distinct so that a wrong pairing cannot pass by coincidence.
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _expected_encoder_key(backbone_key: str) -> str:
    # timm's features_only ConvNeXt flattens the top-level Sequentials: stem.0 -> stem_0,
    # stages.2 -> stages_2 (written here independently of map_encoder_keys).
    return re.sub(r"^(stem|stages)\.(\d+)\.", r"\1_\2.", backbone_key)


def test_encoder_holds_exactly_the_pretrained_tensors():
    state = _random_backbone_state()
    model = build_unet("test_convnext", 2, mean=MEAN, std=STD, state=state)
    enc = model.encoder.state_dict()
    expected = {_expected_encoder_key(k): k for k in state if not k.startswith("head.")}
    assert set(enc) == set(expected)  # every encoder tensor has a source, none is extra
    for ek, bk in expected.items():
        assert torch.equal(enc[ek], state[bk]), ek
    # the only backbone tensors not loaded are the classifier-level head.norm (applied
    # after global pooling), which a feature pyramid does not use
    assert sorted(set(state) - set(expected.values())) == ["head.norm.bias", "head.norm.weight"]


def test_encoder_features_equal_the_backbone_stages():
    # functional check: the pyramid equals running the classification model's stem and
    # stages by hand
    state = _random_backbone_state(seed=1)
    net = create_backbone("test_convnext")
    net.load_state_dict(state)
    enc = create_encoder("test_convnext")
    load_encoder_state(enc, state, source="test")
    net.eval(), enc.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = net.stem(x)
        ref = []
        for stage in net.stages:
            h = stage(h)
            ref.append(h)
        got = enc(x)
    assert len(got) == 4
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=0, atol=0)


def test_load_reports_unused_head_and_returns_it():
    state = _random_backbone_state()
    enc = create_encoder("test_convnext")
    assert load_encoder_state(enc, state, source="w") == ["head.norm.bias", "head.norm.weight"]


def test_missing_or_misshapen_tensor_is_an_error_naming_the_source():
    state = _random_backbone_state()
    bad = dict(state)
    del bad["stages.1.downsample.1.weight"]
    with pytest.raises(ValueError, match=r"my\.safetensors.*missing.*stages_1\.downsample\.1\.weight"):
        load_encoder_state(create_encoder("test_convnext"), bad, source="my.safetensors")
    bad = dict(state)
    bad["stem.0.weight"] = torch.zeros(3, 3, 4, 4)
    with pytest.raises(ValueError, match="wrong shape.*stem_0.weight"):
        load_encoder_state(create_encoder("test_convnext"), bad, source="w")
    # a different architecture does not fit
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder_state(create_encoder("test_convnext"), _random_backbone_state("test_resnet"), source="w")


def test_backbone_with_layers_after_the_last_level_warns(caplog):
    # EfficientNet's conv_head / bn2 come after stride 32: features_only drops them
    torch.manual_seed(0)
    state = create_backbone("test_efficientnet").state_dict()
    enc = create_encoder("test_efficientnet")
    with caplog.at_level(logging.WARNING, logger="codafeat.nn.unet"):
        unused = load_encoder_state(enc, state, source="eff")
    assert any(k.startswith("conv_head") for k in unused)
    assert "not used by the U-Net encoder" in caplog.text
    own = enc.state_dict()
    mapping = map_encoder_keys(list(own), list(state))
    assert all(torch.equal(own[k], state[b]) for k, b in mapping.items())


def test_map_encoder_keys_by_hand():
    enc = ["stem_0.weight", "stages_1.blocks.0.gamma", "conv_stem.weight", "model.fc.bias", "layer1.0.w"]
    bb = ["stem.0.weight", "stages.1.blocks.0.gamma", "conv_stem.weight", "fc.bias", "layer1.0.w", "head.norm.weight"]
    assert map_encoder_keys(enc, bb) == {
        "stem_0.weight": "stem.0.weight",
        "stages_1.blocks.0.gamma": "stages.1.blocks.0.gamma",
        "conv_stem.weight": "conv_stem.weight",
        "model.fc.bias": "fc.bias",
        "layer1.0.w": "layer1.0.w",
    }
    assert map_encoder_keys(["nowhere.w"], bb) == {}


def test_create_encoder_strides_and_errors():
    enc = create_encoder("test_convnext")
    assert enc.feature_info.reduction() == [4, 8, 16, 32]
    assert encoder_channels(enc) == [24, 32, 48, 64]
    # ResNet has a stride-2 level too: only 4..32 are taken
    assert create_encoder("test_resnet").feature_info.reduction() == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="not a timm model"):
        create_encoder("no_such_net")
    with pytest.raises(ValueError, match="strides"):
        create_encoder("test_vit")


@pytest.mark.parametrize("hw", [(64, 64), (64, 48), (33, 37), (32, 96)])
def test_logits_at_input_resolution(hw):
    torch.manual_seed(0)
    model = build_unet("test_convnext", 3, mean=MEAN, std=STD, decoder_channels=(16, 16, 8, 8, 8))
    out = model(torch.rand(2, 1, *hw))
    assert out.shape == (2, 3, *hw)
    assert torch.isfinite(out).all()


def test_input_validation():
    model = build_unet("test_convnext", 2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="at least 32"):
        model(torch.rand(1, 1, 16, 64))
    with pytest.raises(ValueError, match="5 positive"):
        UNetDecoder([8, 8, 8, 8], 2, channels=(8, 8))


def test_decoder_is_random_and_seeded_and_gradients_reach_both_parts():
    state = _random_backbone_state()
    torch.manual_seed(1)
    a = build_unet("test_convnext", 2, mean=MEAN, std=STD, state=state)
    torch.manual_seed(1)
    b = build_unet("test_convnext", 2, mean=MEAN, std=STD, state=state)
    torch.manual_seed(2)
    c = build_unet("test_convnext", 2, mean=MEAN, std=STD, state=state)
    w = "up16.conv.0.weight"
    assert torch.equal(a.decoder.state_dict()[w], b.decoder.state_dict()[w])
    assert not torch.equal(a.decoder.state_dict()[w], c.decoder.state_dict()[w])
    # the encoder is the pretrained one whatever the seed
    assert all(torch.equal(x, y) for x, y in zip(a.encoder.state_dict().values(), c.encoder.state_dict().values()))
    a(torch.rand(2, 1, 32, 32)).sum().backward()
    assert a.encoder.stem_0.weight.grad is not None and a.decoder.head.weight.grad is not None


def test_unet_is_one_channel_input_replicated_and_normalised():
    torch.manual_seed(0)
    model: UNet = build_unet("test_convnext", 2, mean=MEAN, std=STD).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = model.encoder((x.expand(-1, 3, -1, -1) - 0.5) / 0.25)
        got = model.encoder(model.pre(x))
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r)
