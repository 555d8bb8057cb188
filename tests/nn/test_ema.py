"""EMA teacher: the update formula, wrappers, buffers, and make_teacher."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from codafeat.nn.ema import ema_update, make_teacher, unwrap


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.GELU(), nn.Linear(7, 3))


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in m.named_parameters()}


@settings(max_examples=40, deadline=None)
@given(m=st.floats(min_value=0.0, max_value=1.0))
def test_update_matches_formula(m):
    teacher, student = _net(0), _net(1)
    t0, s0 = _params(teacher), _params(student)
    ema_update(teacher, student, m)
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, m * t0[n] + (1 - m) * s0[n], rtol=1e-6, atol=1e-7)
    # the student is untouched
    for n, p in student.named_parameters():
        assert torch.equal(p, s0[n])


def test_momentum_one_keeps_and_zero_copies_exactly():
    teacher, student = _net(0), _net(1)
    t0 = _params(teacher)
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(p, t0[n]) for n, p in teacher.named_parameters())
    ema_update(teacher, student, 0.0)
    s = dict(student.named_parameters())
    assert all(torch.equal(p, s[n]) for n, p in teacher.named_parameters())


def test_repeated_updates_converge_geometrically():
    teacher, student = _net(0), _net(1)
    t0, s0 = _params(teacher), _params(student)
    for _ in range(10):
        ema_update(teacher, student, 0.9)
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, s0[n] + 0.9**10 * (t0[n] - s0[n]), rtol=1e-5, atol=1e-6)


def test_buffers_are_copied_not_averaged():
    teacher, student = _net(0), _net(1)
    student.train()
    student(torch.randn(16, 5))  # moves running stats and num_batches_tracked
    ema_update(teacher, student, 0.99)
    bn_t, bn_s = teacher[1], student[1]
    assert torch.equal(bn_t.running_mean, bn_s.running_mean)
    assert torch.equal(bn_t.running_var, bn_s.running_var)
    assert int(bn_t.num_batches_tracked) == 1


class _ObjectWrapper:  # duck-typed DDP: anything with .module
    def __init__(self, module: nn.Module) -> None:
        self.module = module


class _ModuleWrapper(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


@pytest.mark.parametrize("wrap", [_ObjectWrapper, _ModuleWrapper, nn.DataParallel])
def test_wrapped_student_is_unwrapped(wrap):
    teacher, student = _net(0), _net(1)
    t0, s0 = _params(teacher), _params(student)
    ema_update(teacher, wrap(student), 0.25)
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.25 * t0[n] + 0.75 * s0[n])
    assert unwrap(wrap(student)) is student


def test_real_ddp_student(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        student = _net(1)
        teacher = make_teacher(nn.parallel.DistributedDataParallel(student))
        with torch.no_grad():
            for p in student.parameters():
                p.add_(2.0)
        t0, s0 = _params(teacher), _params(student)
        ema_update(teacher, nn.parallel.DistributedDataParallel(student), 0.5)
        for n, p in teacher.named_parameters():
            torch.testing.assert_close(p, 0.5 * t0[n] + 0.5 * s0[n])
    finally:
        dist.destroy_process_group()


def test_module_holding_more_than_module_is_not_unwrapped():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)
            self.other = nn.Linear(2, 2)

    net = Net()
    assert unwrap(net) is net


def test_make_teacher_is_a_frozen_independent_copy():
    student = _net(1)
    student.train()
    teacher = make_teacher(_ObjectWrapper(student))
    assert type(teacher) is type(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training
    for (n, p), (_, q) in zip(teacher.named_parameters(), student.named_parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), n
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert not torch.equal(teacher[0].weight, student[0].weight)


def test_ema_update_builds_no_graph():
    teacher, student = _net(0), _net(1)
    ema_update(teacher, student, 0.5)
    assert all(p.grad_fn is None for p in teacher.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.5, float("nan")])
def test_bad_momentum(m):
    with pytest.raises(ValueError, match="momentum"):
        ema_update(_net(0), _net(1), m)


def test_mismatched_networks():
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(5, 3), _net(1), 0.9)
