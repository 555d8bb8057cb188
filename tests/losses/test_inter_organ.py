"""InterOrganLoss against paper Eq. 1 written out with loops, plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from codafeat.losses import InterOrganLoss


def reference_eq1(zs, zt, ys, yt, tau, denominator):
    """Eq. 1 literally: loops over anchors, positives and the denominator set, float64.

    Returns (loss, n_anchors); the loss is a differentiable torch scalar (or None).
    """
    zs = zs.double() / zs.double().norm(dim=1, keepdim=True)
    zt = zt.double() / zt.double().norm(dim=1, keepdim=True)
    per_anchor = []
    for i in range(zs.shape[0]):
        positives = [j for j in range(zt.shape[0]) if int(yt[j]) == int(ys[i])]
        negatives = [j for j in range(zt.shape[0]) if int(yt[j]) != int(ys[i])]
        if not positives or not negatives:
            continue
        denominator_set = negatives if denominator == "negatives" else positives + negatives
        denom = sum(torch.exp(torch.dot(zs[i], zt[n]) / tau) for n in denominator_set)
        total = 0.0
        for p in positives:
            total = total + torch.log(torch.exp(torch.dot(zs[i], zt[p]) / tau) / denom)
        per_anchor.append(-total / len(positives))
    if not per_anchor:
        return None, 0
    return sum(per_anchor) / len(per_anchor), len(per_anchor)


def test_hand_computed_example():
    zs = torch.tensor([[1.0, 0.0]])
    zt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ys, yt = torch.tensor([0]), torch.tensor([0, 1])
    # one positive (similarity 1), one negative (similarity 0), tau = 1
    loss, n = InterOrganLoss(temperature=1.0)(zs, zt, ys, yt)
    assert n == 1 and loss.item() == pytest.approx(-1.0, abs=1e-6)  # -log(e^1 / e^0)
    loss, n = InterOrganLoss(temperature=1.0, denominator="all")(zs, zt, ys, yt)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)  # -log(e / (e + 1))


@pytest.mark.parametrize("denominator", ["negatives", "all"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference(denominator, seed):
    g = torch.Generator().manual_seed(seed)
    b, m, d = 7, 11, 5
    zs = torch.randn(b, d, generator=g, requires_grad=True)
    zt = torch.randn(m, d, generator=g)
    ys = torch.randint(0, 3, (b,), generator=g)
    yt = torch.randint(0, 3, (m,), generator=g)
    ys[0] = 7  # an anchor with no positive is left out
    tau = [0.1, 0.07, 0.5][seed % 3]
    loss, n = InterOrganLoss(tau, denominator)(zs, zt, ys, yt)
    ref, n_ref = reference_eq1(zs, zt, ys, yt, tau, denominator)
    assert n == n_ref < b
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    (grad,) = torch.autograd.grad(loss, zs)
    (grad_ref,) = torch.autograd.grad(ref, zs)
    torch.testing.assert_close(grad.double(), grad_ref.double(), rtol=1e-4, atol=1e-6)


def test_denominators_differ_and_all_is_larger():
    torch.manual_seed(0)
    zs, zt = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    neg, _ = InterOrganLoss(denominator="negatives")(zs, zt, y, y)
    all_, _ = InterOrganLoss(denominator="all")(zs, zt, y, y)
    assert all_.item() > neg.item()  # a larger denominator gives a larger loss


def test_inputs_are_normalised_inside():
    torch.manual_seed(0)
    zs, zt = torch.randn(5, 4), torch.randn(8, 4)
    ys, yt = torch.tensor([0, 1, 0, 2, 1]), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss_fn = InterOrganLoss()
    a, _ = loss_fn(zs, zt, ys, yt)
    b, _ = loss_fn(zs * (torch.rand(5, 1) * 9 + 0.5), zt * 3.0, ys, yt)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


labels_strategy = st.integers(1, 8).flatmap(
    lambda b: st.tuples(
        st.lists(st.integers(0, 3), min_size=b, max_size=b),
        st.lists(st.integers(0, 3), min_size=1, max_size=10),
        st.integers(0, 2**31 - 1),
    )
)


@settings(max_examples=60, deadline=None)
@given(data=labels_strategy, denominator=st.sampled_from(["negatives", "all"]), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_finite_loss_and_gradients_for_any_labels(data, denominator, scale):
    ys, yt, seed = data
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(len(ys), 6, generator=g) * scale).requires_grad_()
    zt = torch.randn(len(yt), 6, generator=g) * scale
    loss, n = InterOrganLoss(0.05, denominator)(zs, zt, torch.tensor(ys), torch.tensor(yt))
    expected = sum(1 for y in ys if y in yt and any(t != y for t in yt))
    assert n == expected
    assert torch.isfinite(loss)
    loss.backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()
    if n == 0:
        assert loss.item() == 0.0 and torch.count_nonzero(zs.grad) == 0


@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3]])
def test_single_organ_and_all_distinct_batches(labels):
    torch.manual_seed(0)
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5)
    y = torch.tensor(labels)
    loss, n = InterOrganLoss()(zs, zt, y, y)
    if len(set(labels)) == 1:  # no negatives anywhere: skipped, exact zero, graph-connected
        assert n == 0 and loss.item() == 0.0 and loss.requires_grad
    else:  # every anchor has exactly one positive (its own teacher view)
        ref, n_ref = reference_eq1(zs, zt, y, y, 0.1, "negatives")
        assert n == n_ref == 4 and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(zs.grad).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 8), m=st.integers(1, 10))
def test_invariant_to_joint_permutation(seed, b, m):
    g = torch.Generator().manual_seed(seed)
    zs, zt = torch.randn(b, 4, generator=g), torch.randn(m, 4, generator=g)
    ys, yt = torch.randint(0, 3, (b,), generator=g), torch.randint(0, 3, (m,), generator=g)
    ps, pt = torch.randperm(b, generator=g), torch.randperm(m, generator=g)
    for denominator in ("negatives", "all"):
        loss_fn = InterOrganLoss(0.1, denominator)
        a, na = loss_fn(zs, zt, ys, yt)
        c, nc = loss_fn(zs[ps], zt[pt], ys[ps], yt[pt])
        assert na == nc
        assert a.item() == pytest.approx(c.item(), rel=1e-5, abs=1e-6)


def test_permuting_labels_alone_changes_the_loss():
    """The invariance above is not trivial: labels must move with their embeddings."""
    torch.manual_seed(0)
    zs, zt = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    a, _ = InterOrganLoss()(zs, zt, y, y)
    b, _ = InterOrganLoss()(zs, zt, y[torch.tensor([2, 3, 4, 5, 0, 1])], y)
    assert abs(a.item() - b.item()) > 1e-3


def test_gradients_never_reach_the_teacher():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 4), nn.Linear(3, 4)  # teacher params deliberately require grad
    x = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    z_t = teacher(x)
    assert z_t.requires_grad
    loss, n = InterOrganLoss()(student(x), z_t, y, y)
    loss.backward()
    assert n == 6
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in student.parameters())


def test_float32_under_autocast():
    torch.manual_seed(0)
    zs, zt = torch.randn(6, 8), torch.randn(6, 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    zs16, zt16 = zs.bfloat16(), zt.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = InterOrganLoss()(zs16, zt16, y, y)
    assert loss.dtype == torch.float32
    ref, _ = reference_eq1(zs16.float(), zt16.float(), y, y, 0.1, "negatives")
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        InterOrganLoss(temperature=0)
    with pytest.raises(ValueError, match="denominator"):
        InterOrganLoss(denominator="supcon")
    loss_fn = InterOrganLoss()
    z = torch.randn(4, 3)
    y = torch.arange(4)
    with pytest.raises(ValueError, match="2-D"):
        loss_fn(z[0], z, y, y)
    with pytest.raises(ValueError, match="different sizes"):
        loss_fn(z, torch.randn(4, 5), y, y)
    with pytest.raises(ValueError, match="labels_teacher"):
        loss_fn(z, z, y, y[:3])
    with pytest.raises(ValueError, match="integer"):
        loss_fn(z, z, y.float(), y)


def test_labels_may_be_numpy_backed_int_tensors():
    y = torch.from_numpy(np.array([0, 1, 0, 1], dtype=np.int32))
    loss, n = InterOrganLoss()(torch.randn(4, 3), torch.randn(4, 3), y, y.long())
    assert n == 4 and torch.isfinite(loss)
