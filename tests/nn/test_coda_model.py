"""The Coda network (codafeat/nn/coda_model.py): which outputs each pass gives, and their shapes."""

from __future__ import annotations

import torch

from codafeat.nn.coda_model import CodaNetwork

KW = dict(mean=[0.5] * 3, std=[0.25] * 3, head_out_dim=16, head_hidden_dim=8, head_bottleneck_dim=4)


def test_teacher_and_student_passes():
    net = CodaNetwork("test_convnext", **KW).eval()
    g, loc = torch.rand(2, 1, 32, 32), torch.rand(4, 1, 32, 32)
    out = net(g)
    assert out.org.shape == (2, 16) and out.ins.shape == (2, 16), "teacher: both heads on the global views"
    assert out.bottleneck is None, "only when asked for"
    out = net(g, loc)
    assert out.ins.shape == (4, 16), "student, asymmetric: the intra-organ head sees the crops only"
    out = net(g, loc, ins_on_global=True, return_bottleneck=True)
    assert out.ins.shape == (6, 16) and out.bottleneck.shape == (2, 4), "symmetric: global views, then crops"
    torch.testing.assert_close(out.bottleneck.norm(dim=1), torch.ones(2))


def test_single_branch_networks_and_the_frozen_last_layers():
    inter_only = CodaNetwork("test_convnext", with_ins=False, **KW)
    assert inter_only(torch.rand(2, 1, 32, 32)).ins is None
    assert inter_only(torch.rand(2, 1, 32, 32), return_bottleneck=True).bottleneck is None
    both = CodaNetwork("test_convnext", **KW)
    assert len(both.last_layer_parameters()) == 2 * len(inter_only.last_layer_parameters()) > 0
    assert all(p.requires_grad for p in both.last_layer_parameters())
