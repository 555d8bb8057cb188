"""LinearHeadNet: the paper's transfer network (codafeat/nn/linear_head.py)."""

from __future__ import annotations

import pytest
import torch

from codafeat.nn.backbone import FeatureExtractor, create_backbone
from codafeat.nn.linear_head import build_linear_head_net


def test_features_are_the_encoders_and_the_head_starts_at_zero():
    torch.manual_seed(0)
    net = build_linear_head_net("test_convnext", 4, mean=(0.5,) * 3, std=(0.25,) * 3, pooling="avgmax")
    x = torch.rand(3, 1, 32, 32)
    ref = FeatureExtractor(net.encoder.backbone, (0.5,) * 3, (0.25,) * 3)
    torch.testing.assert_close(net.encoder(x), ref(x))
    assert net.head.in_features == net.encoder.backbone.num_features
    assert torch.count_nonzero(net(x)) == 0


def test_state_must_fit_the_backbone_and_errors_name_the_source():
    state = create_backbone("test_convnext").state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="my.safetensors"):
        build_linear_head_net("test_convnext", 2, mean=(0.5,) * 3, std=(0.5,) * 3, state=state, source="my.safetensors")
