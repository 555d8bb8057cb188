"""Backbone rules (codafeat/nn/backbone.py): names, the stride bound, feature pyramids, mismatch reports."""

from __future__ import annotations

import pytest
import torch

from codafeat.nn.backbone import (
    check_input_size,
    check_model_name,
    create_backbone,
    create_feature_backbone,
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
