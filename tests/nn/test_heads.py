"""DINOHead: shapes, init, unit-norm last layer, and equivalence to torch's weight_norm."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codafeat.nn.ema import ema_update, make_teacher
from codafeat.nn.heads import DINOHead, WeightNormLinear, cancel_last_layer_grad

SMALL = dict(out_dim=96, hidden_dim=48, bottleneck_dim=16)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_output_shape_and_layer_count(n_layers):
    head = DINOHead(20, n_layers=n_layers, **SMALL)
    assert head(torch.randn(7, 20)).shape == (7, 96)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    gelus = [m for m in head.mlp if isinstance(m, nn.GELU)]
    assert len(linears) == n_layers and len(gelus) == n_layers - 1
    assert linears[-1].out_features == 16
    assert head.out_dim == 96


def test_default_is_the_papers_head():
    torch.manual_seed(0)
    head = DINOHead(32)  # out 65,536, hidden 2048, bottleneck 256, 3 layers
    out = head(torch.randn(2, 32))
    assert out.shape == (2, 65536)
    assert [m.out_features for m in head.mlp if isinstance(m, nn.Linear)] == [2048, 2048, 256]
    assert head.last_layer.weight_v.shape == (65536, 256)
    assert head.last_layer.weight_g is None


def test_init_follows_dino():
    torch.manual_seed(0)
    head = DINOHead(64, out_dim=64, hidden_dim=512, bottleneck_dim=256)
    for m in head.mlp:
        if isinstance(m, nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
            assert abs(m.weight.std().item() - 0.02) < 0.002
    # default nn.Linear init for the direction: uniform(-1/sqrt(in), 1/sqrt(in))
    v = head.last_layer.weight_v
    assert v.abs().max() <= 1 / 256**0.5 + 1e-6
    assert v.abs().max() > 0.9 / 256**0.5


def test_last_layer_rows_are_unit_norm_when_normalised():
    head = DINOHead(10, norm_last_layer=True, **SMALL)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(torch.rand(96, 1) * 10 + 0.1)  # rows of any length
    w = head.last_layer.weight()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(96), rtol=0, atol=1e-6)
    # and the output is z . w_k with z unit-norm, so bounded by 1 in absolute value
    assert head(torch.randn(50, 10)).abs().max() <= 1 + 1e-5
    assert [n for n, _ in head.last_layer.named_parameters()] == ["weight_v"]


def test_learnt_norm_scales_rows():
    head = DINOHead(10, norm_last_layer=False, **SMALL)
    with torch.no_grad():
        head.last_layer.weight_g.copy_(torch.linspace(0.5, 2.0, 96).unsqueeze(1))
    torch.testing.assert_close(head.last_layer.weight().norm(dim=1), torch.linspace(0.5, 2.0, 96))


def _reference_head(head: DINOHead) -> nn.Module:
    """The same head built with torch.nn.utils.parametrizations.weight_norm."""
    last = nn.Linear(head.last_layer.in_features, head.last_layer.out_features, bias=False)
    last = weight_norm(last, name="weight", dim=0)
    with torch.no_grad():
        last.parametrizations.weight.original1.copy_(head.last_layer.weight_v)
        g = head.last_layer.weight_g
        last.parametrizations.weight.original0.copy_(
            g if g is not None else torch.ones_like(last.parametrizations.weight.original0)
        )
    if head.last_layer.weight_g is None:
        last.parametrizations.weight.original0.requires_grad_(False)  # DINO: g fixed to 1

    class Ref(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = copy.deepcopy(head.mlp)
            self.last = last

        def forward(self, x):
            return self.last(F.normalize(self.mlp(x), dim=-1))

    return Ref()


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_forward_and_gradients_match_torch_weight_norm(norm_last_layer):
    torch.manual_seed(1)
    head = DINOHead(12, norm_last_layer=norm_last_layer, **SMALL)
    if not norm_last_layer:
        with torch.no_grad():
            head.last_layer.weight_g.uniform_(0.5, 1.5)
    ref = _reference_head(head)
    x = torch.randn(9, 12)
    target = torch.randn(9, 96)
    out, out_ref = head(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    (out * target).sum().backward()
    (out_ref * target).sum().backward()
    for (n, p), (_, p_ref) in zip(head.mlp.named_parameters(), ref.mlp.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-7, msg=n)
    pw = ref.last.parametrizations.weight
    torch.testing.assert_close(head.last_layer.weight_v.grad, pw.original1.grad, rtol=1e-4, atol=1e-7)
    if norm_last_layer:
        assert pw.original0.grad is None
    else:
        torch.testing.assert_close(head.last_layer.weight_g.grad, pw.original0.grad, rtol=1e-4, atol=1e-7)


def test_gradient_of_unit_rows_is_tangent():
    """With g fixed, scaling a row of v leaves the output unchanged, so its gradient is orthogonal to it."""
    torch.manual_seed(2)
    lin = WeightNormLinear(8, 5)
    lin(torch.randn(4, 8)).pow(2).sum().backward()
    g, v = lin.weight_v.grad, lin.weight_v
    cosine = (g * v).sum(1) / (g.norm(dim=1) * v.norm(dim=1))
    assert g.norm(dim=1).min() > 0
    torch.testing.assert_close(cosine, torch.zeros(5), rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layer_parameters_and_cancel(norm_last_layer):
    head = DINOHead(6, norm_last_layer=norm_last_layer, **SMALL)
    names = {id(p): n for n, p in head.named_parameters()}
    last = [names[id(p)] for p in head.last_layer_parameters()]
    assert last == (["last_layer.weight_v"] if norm_last_layer else ["last_layer.weight_v", "last_layer.weight_g"])
    other = DINOHead(6, **SMALL)
    (head(torch.randn(3, 6)).sum() + other(torch.randn(3, 6)).sum()).backward()
    cancel_last_layer_grad(head, other)
    for h in (head, other):
        assert all(p.grad is None for p in h.last_layer_parameters())
        assert all(p.grad is not None for p in h.mlp.parameters())


def test_head_is_plain_parameters_and_ema_able():
    torch.manual_seed(3)
    student = DINOHead(6, **SMALL)
    teacher = make_teacher(student)
    assert not any("parametrizations" in n for n, _ in student.named_parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.5)
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.5 * before[n] + 0.5 * dict(student.named_parameters())[n])
    x = torch.randn(2, 6)
    assert torch.isfinite(teacher(x)).all()


def test_bf16_autocast_forward():
    head = DINOHead(6, **SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(4, 6))
    assert out.shape == (4, 96) and torch.isfinite(out.float()).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_dim=0),
        dict(in_dim=4, out_dim=0),
        dict(in_dim=4, n_layers=0),
        dict(in_dim=4, hidden_dim=2.5),
        dict(in_dim=True),
    ],
)
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="DINOHead"):
        DINOHead(**kwargs)
