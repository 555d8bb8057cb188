"""Backbone rules (codafeat/nn/backbone.py): names, the stride bound, feature pyramids, mismatch reports."""

from __future__ import annotations

import pytest
import torch

from codafeat.nn.backbone import (
    FeatureExtractor,
    check_input_size,
    check_model_name,
    create_backbone,
    create_feature_backbone,
    feature_dim,
    load_backbone_state,
    state_mismatch,
    total_stride,
)


def test_model_names():
    assert check_model_name("test_convnext") == "test_convnext"
    for bad in ("no_such_net", 3, None):
        with pytest.raises(ValueError, match="not a timm model name"):
            check_model_name(bad)


def test_one_input_size_rule_for_every_estimator():
    net = create_backbone("test_convnext")
    assert total_stride(net) == 32
    check_input_size(net, "test_convnext", image_size=32, local_size=64)
    with pytest.raises(ValueError, match=r"local_size=16 must be at least the total stride \(32\)"):
        check_input_size(net, "test_convnext", image_size=32, local_size=16)
    pyramid = create_feature_backbone("test_convnext", (4, 8, 16, 32))
    assert total_stride(pyramid) == 32
    assert total_stride(torch.nn.Linear(2, 2)) == 1  # unknown: no bound


def test_feature_pyramid_strides():
    enc = create_feature_backbone("test_convnext", (8, 32))
    assert enc.feature_info.reduction() == [8, 32]
    with pytest.raises(ValueError, match="needed: \\[4, 64\\]"):
        create_feature_backbone("test_convnext", (4, 64))


def test_mismatch_report_and_strict_load():
    own = {"a": torch.zeros(2), "b": torch.zeros(1)}
    assert state_mismatch(own, own) == []
    parts = state_mismatch(own, {"a": torch.zeros(3), "c": torch.zeros(1)})
    assert [p.split(" ")[1] for p in parts] == ["missing", "unexpected", "tensor(s)"]
    assert state_mismatch(own, {"a": torch.zeros(2)}, unexpected=False) == ["1 missing tensor(s) (e.g. ['b'])"]
    net = create_backbone("test_convnext")
    state = net.state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="my.safetensors: tensors do not match.*missing"):
        load_backbone_state(net, state, source="my.safetensors")


def test_vision_transformers_take_every_input_side():
    """Issue 19, item 12: a timm ViT works where a ConvNeXt does (local crops are smaller than global views)."""
    import torch

    from codafeat.nn.backbone import create_backbone, embed_dim

    net = create_backbone("test_vit", pooling="avg")
    for side in (32, 50, 96):
        assert net(torch.zeros(2, 3, side, side)).shape == (2, embed_dim(net))


def test_pretraining_a_vit_runs_and_its_encoder_embeds(tmp_path):
    import numpy as np

    from codafeat import CodaEncoder
    from codafeat.pretrain import CodaPretrainer

    from helpers import TINY_PRETRAIN as TINY
    from helpers import make_organ_folder

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    pre = CodaPretrainer(**dict(TINY, backbone="test_vit", epochs=1, local_size=16)).fit(folder)
    path = pre.save(tmp_path / "vit.safetensors")
    emb = CodaEncoder(weights=str(path), image_size=48).fit().transform(np.zeros((2, 40, 40), np.uint8))
    assert emb.shape == (2, 64) and np.isfinite(emb).all()


# --------------------------------------------------------------------------- feature layouts (issue 30, item 3)
MEAN, STD = [0.5] * 3, [0.25] * 3


def _extract(net, x, **layout):
    with torch.no_grad():
        return FeatureExtractor(net, MEAN, STD, **layout).eval()(x)


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_stages_are_the_pooled_maps_of_timm_features_only_then_the_embedding(pooling):
    """An independent reference: timm's own ``features_only`` model with the same tensors."""
    import timm

    net = create_backbone("convnext_atto", pooling=pooling).eval()
    ref = timm.create_model("convnext_atto", features_only=True, pretrained=False).eval()
    # FeatureListNet flattens the top sequentials: "stages.1.blocks..." is "stages_1.blocks..." there
    renamed = {
        (lambda p: "_".join(p[:2]) + "." + ".".join(p[2:]) if p[0] in ("stem", "stages") else k)(k.split(".")): v
        for k, v in net.state_dict().items()
        if not k.startswith("head")
    }
    ref.load_state_dict(renamed, strict=True)
    x = torch.rand(3, 1, 64, 64)
    out = _extract(net, x, features="stages", pooling=pooling)
    with torch.no_grad():
        maps = ref(((x - 0.5) / 0.25).expand(-1, 3, -1, -1))
    pool = {
        "avg": lambda m: m.mean((2, 3)),
        "max": lambda m: m.amax((2, 3)),
        "avgmax": lambda m: 0.5 * (m.mean((2, 3)) + m.amax((2, 3))),
    }[pooling]
    expected = torch.cat([pool(m) for m in maps[:-1]] + [_extract(net, x)], dim=1)
    assert out.shape == (3, feature_dim(net, "stages")) == (3, 40 + 80 + 160 + 320)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_the_grid_keeps_where_things_are_and_a_1x1_grid_is_the_pooled_embedding():
    net = create_backbone("convnext_atto").eval()
    x = torch.rand(2, 1, 128, 128)
    torch.testing.assert_close(_extract(net, x, features="grid", grid_size=1), _extract(net, x), rtol=0, atol=0)
    grid = _extract(net, x, features="grid", grid_size=2)
    assert grid.shape == (2, feature_dim(net, "grid", 2)) == (2, 320 * 4)
    bright_left = torch.zeros(1, 1, 128, 128)
    bright_left[..., :, :40] = 1.0
    cells = _extract(net, bright_left, features="grid", grid_size=2).view(320, 2, 2)
    assert not torch.allclose(cells[:, :, 0], cells[:, :, 1], atol=1e-3), "left and right cells differ"


def test_feature_layouts_are_deterministic_and_refuse_what_they_cannot_do():
    net = create_backbone("test_convnext").eval()
    x = torch.rand(2, 1, 32, 32)
    for layout in ({"features": "stages"}, {"features": "grid", "grid_size": 3}):
        assert torch.equal(_extract(net, x, **layout), _extract(net, x, **layout))
    with pytest.raises(ValueError, match="features must be one of"):
        FeatureExtractor(net, MEAN, STD, features="patches")
    with pytest.raises(ValueError, match=r"grid_size must be an int in \[1, 16\]"):
        FeatureExtractor(net, MEAN, STD, features="grid", grid_size=0)
