"""IntraOrganLoss against DINO's cross-entropy written out with loops, plus the centre update."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from codafeat.losses import IntraOrganLoss


def reference_ce(student, teacher, center, t_temp, s_temp, n_crops):
    """mean over crops v and images b of -sum_k p_t[b,k] log q[v,b,k], with explicit loops (float64)."""
    b, k = teacher.shape
    student, teacher, center = student.double(), teacher.double(), center.double().reshape(-1)
    terms = []
    for v in range(n_crops):
        for i in range(b):
            t_logits = [(teacher[i, j] - center[j]) / t_temp for j in range(k)]
            t_max = max(float(x) for x in t_logits)
            t_exp = [math.exp(float(x) - t_max) for x in t_logits]
            p = [e / sum(t_exp) for e in t_exp]  # teacher: constants, no gradient
            row = student[v * b + i] / s_temp  # crop-major: crop v of image i
            log_z = torch.logsumexp(row, dim=0)
            terms.append(-sum(p[j] * (row[j] - log_z) for j in range(k)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n_crops, b, k = 3, 4, 10
    loss_fn = IntraOrganLoss(out_dim=k, student_temp=0.1)
    loss_fn.center.copy_(torch.randn(1, k, generator=g))  # a non-zero centre matters
    student = (torch.randn(n_crops * b, k, generator=g) * 2).requires_grad_()
    teacher = torch.randn(b, k, generator=g) * 2
    t_temp = [0.04, 0.07, 0.5, 1.0][seed]
    loss = loss_fn(student, teacher, t_temp, n_crops)
    ref = reference_ce(student, teacher, loss_fn.center, t_temp, 0.1, n_crops)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    (grad,) = torch.autograd.grad(loss, student)
    (grad_ref,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(grad.double(), grad_ref.double(), rtol=1e-4, atol=1e-6)


def test_minimum_is_the_teacher_entropy():
    """When the student's distribution equals the teacher's, the cross-entropy is the teacher's entropy."""
    torch.manual_seed(0)
    k, b = 12, 5
    loss_fn = IntraOrganLoss(out_dim=k, student_temp=0.1)
    teacher = torch.randn(b, k)
    p = torch.softmax(teacher / 0.04, dim=1)
    student = (torch.log(p) * 0.1).repeat(2, 1)  # 2 crops, both matching
    entropy = -(p * torch.log(p)).sum(1).mean()
    assert loss_fn(student, teacher, 0.04, 2).item() == pytest.approx(entropy.item(), rel=1e-5, abs=1e-6)
    # and any other student does worse (Gibbs' inequality)
    assert loss_fn(student + 0.05 * torch.randn_like(student), teacher, 0.04, 2).item() > entropy.item()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 6), n_crops=st.integers(1, 4))
def test_invariant_to_permuting_images_consistently(seed, b, n_crops):
    g = torch.Generator().manual_seed(seed)
    k = 16
    loss_fn = IntraOrganLoss(out_dim=k)
    loss_fn.center.copy_(torch.randn(1, k, generator=g))
    student = torch.randn(n_crops * b, k, generator=g)
    teacher = torch.randn(b, k, generator=g)
    perm = torch.randperm(b, generator=g)
    student_perm = student.view(n_crops, b, k)[:, perm].reshape(n_crops * b, k)
    a = loss_fn(student, teacher, 0.04, n_crops)
    c = loss_fn(student_perm, teacher[perm], 0.04, n_crops)
    assert a.item() == pytest.approx(c.item(), rel=1e-5, abs=1e-6)
    assert torch.isfinite(a)


def test_crop_order_is_crop_major():
    """Reading the crops image-major instead of crop-major gives another loss."""
    torch.manual_seed(0)
    n_crops, b, k = 3, 4, 8
    loss_fn = IntraOrganLoss(out_dim=k)
    student, teacher = torch.randn(n_crops * b, k), torch.randn(b, k)
    image_major = student.view(b, n_crops, k).transpose(0, 1).reshape(n_crops * b, k)
    assert (
        abs(loss_fn(student, teacher, 0.04, n_crops).item() - loss_fn(image_major, teacher, 0.04, n_crops).item())
        > 1e-3
    )


def test_gradients_never_reach_the_teacher():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 8), nn.Linear(3, 8)  # teacher params deliberately require grad
    x = torch.randn(4, 3)
    crops = torch.randn(2 * 4, 3)
    loss = IntraOrganLoss(out_dim=8)(student(crops), teacher(x), 0.04, 2)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_float32_under_autocast_and_extreme_logits():
    torch.manual_seed(0)
    loss_fn = IntraOrganLoss(out_dim=32)
    student = (torch.randn(6, 32) * 100).bfloat16().requires_grad_()
    teacher = (torch.randn(3, 32) * 100).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(student, teacher, 0.04, 2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.grad.float()).all()


def test_center_update_formula():
    torch.manual_seed(0)
    k = 6
    loss_fn = IntraOrganLoss(out_dim=k, center_momentum=0.9)
    t1, t2 = torch.randn(5, k), torch.randn(3, k)
    loss_fn.update_center(t1)
    c1 = 0.1 * t1.mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, c1)
    loss_fn.update_center(t2)
    torch.testing.assert_close(loss_fn.center, 0.9 * c1 + 0.1 * t2.mean(0, keepdim=True))
    assert loss_fn.center.shape == (1, k)
    assert "center" in loss_fn.state_dict()


def test_loss_uses_the_centre_and_does_not_update_it():
    torch.manual_seed(0)
    loss_fn = IntraOrganLoss(out_dim=5)
    student, teacher = torch.randn(4, 5), torch.randn(2, 5)
    a = loss_fn(student, teacher, 0.04, 2)
    assert torch.count_nonzero(loss_fn.center) == 0
    loss_fn.center.fill_(0.0)[0, 0] = 3.0
    assert loss_fn(student, teacher, 0.04, 2).item() != pytest.approx(a.item())


def _center_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss_fn = IntraOrganLoss(out_dim=4, center_momentum=0.5)
        teacher = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 100 * rank
        loss_fn.update_center(teacher)
        if rank == 0:
            torch.save(loss_fn.center, out_file)
    finally:
        dist.destroy_process_group()


def test_center_is_averaged_over_ranks(tmp_path):
    out = tmp_path / "center.pt"
    # fork: the children inherit the imports (spawn would re-import torch: ~10 s per process)
    mp.start_processes(
        _center_worker, args=(2, str(tmp_path / "pg"), str(out)), nprocs=2, join=True, start_method="fork"
    )
    both = torch.cat([torch.arange(12.0).reshape(3, 4), torch.arange(12.0).reshape(3, 4) + 100])
    torch.testing.assert_close(torch.load(out), 0.5 * both.mean(0, keepdim=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_dim"):
        IntraOrganLoss(out_dim=0)
    with pytest.raises(ValueError, match="student_temp"):
        IntraOrganLoss(student_temp=0.0)
    with pytest.raises(ValueError, match="center_momentum"):
        IntraOrganLoss(center_momentum=1.5)
    loss_fn = IntraOrganLoss(out_dim=4)
    s, t = torch.randn(6, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="teacher_temp"):
        loss_fn(s, t, 0.0, 2)
    with pytest.raises(ValueError, match="n_crops"):
        loss_fn(s, t, 0.04, 0)
    with pytest.raises(ValueError, match=r"n_crops \* B"):
        loss_fn(s, t, 0.04, 3)
    with pytest.raises(ValueError, match="teacher_out"):
        loss_fn(s, torch.randn(3, 5), 0.04, 2)
    with pytest.raises(ValueError, match="update_center"):
        loss_fn.update_center(torch.randn(3, 5))


def reference_pairs(student, teacher, center, t_temp, s_temp, n_s, n_t, pairs):
    """mean over the chosen (student view, teacher view) pairs of the per-pair mean cross-entropy."""
    b = teacher.shape[0] // n_t
    total, used = 0.0, 0
    for v in range(n_s):
        for w in range(n_t):
            if not pairs[v][w]:
                continue
            sub_t = teacher[w * b : (w + 1) * b]
            sub_s = student[v * b : (v + 1) * b]
            total = total + reference_ce(sub_s, sub_t, center, t_temp, s_temp, 1)
            used += 1
    return total / used


@pytest.mark.parametrize("seed", range(3))
def test_two_teacher_views_and_pair_mask_match_loop_reference(seed):
    """DINO's symmetric form: student views [g1, g2, crops] against teacher views [g1, g2],
    leaving out each global view paired with itself."""
    g = torch.Generator().manual_seed(seed)
    n_s, n_t, b, k = 4, 2, 3, 7
    loss_fn = IntraOrganLoss(out_dim=k, student_temp=0.1)
    loss_fn.center.copy_(torch.randn(1, k, generator=g))
    student = (torch.randn(n_s * b, k, generator=g) * 2).requires_grad_()
    teacher = torch.randn(n_t * b, k, generator=g) * 2
    pairs = torch.ones(n_s, n_t, dtype=torch.bool)
    pairs[0, 0] = pairs[1, 1] = False
    loss = loss_fn(student, teacher, 0.07, n_s, n_teacher_views=n_t, pairs=pairs)
    ref = reference_pairs(student, teacher, loss_fn.center, 0.07, 0.1, n_s, n_t, pairs.tolist())
    assert loss.item() == pytest.approx(float(ref), rel=1e-5, abs=1e-5)
    (grad,) = torch.autograd.grad(loss, student)
    (grad_ref,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(grad.double(), grad_ref.double(), rtol=1e-4, atol=1e-6)
    # Without a mask every pair counts (a different value: the mask is used).
    full = loss_fn(student, teacher, 0.07, n_s, n_teacher_views=n_t)
    ref_full = reference_pairs(student, teacher, loss_fn.center, 0.07, 0.1, n_s, n_t, [[True] * n_t] * n_s)
    assert full.item() == pytest.approx(float(ref_full), rel=1e-5, abs=1e-5)
    assert full.item() != pytest.approx(loss.item(), rel=1e-6)


def test_bad_pair_masks_are_rejected():
    loss_fn = IntraOrganLoss(out_dim=4)
    s, t = torch.randn(6, 4), torch.randn(4, 4)
    with pytest.raises(ValueError, match="pairs"):
        loss_fn(s, t, 0.04, 3, n_teacher_views=2, pairs=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pairs"):
        loss_fn(s, t, 0.04, 3, n_teacher_views=2, pairs=torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="teacher_out"):
        loss_fn(s, torch.randn(5, 4), 0.04, 3, n_teacher_views=2)
