"""The training monitor's figures and collapse warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codafeat._train.monitor import (
    MIN_PER_ORGAN,
    TrainingMonitor,
    collapse_warnings,
    monitor_split,
)
from codafeat.losses.intra_organ import IntraOrganLoss
from codafeat.nn.coda_model import CodaNetwork


def _net(seed=0) -> CodaNetwork:
    torch.manual_seed(seed)
    return CodaNetwork(
        "test_convnext", mean=(0.5,) * 3, std=(0.25,) * 3, head_out_dim=64, head_hidden_dim=16, head_bottleneck_dim=8
    ).eval()


def _monitor(n_per=6, seed=0) -> TrainingMonitor:
    g = torch.Generator().manual_seed(seed)
    imgs, labels = [], []
    for organ in range(2):
        for _ in range(n_per):
            base = torch.zeros(1, 32, 32)
            if organ == 0:
                base[:, ::4] = 1.0
            else:
                base[:, :, ::4] = 1.0
            imgs.append(((base * 0.8 + 0.2 * torch.rand(1, 32, 32, generator=g)) * 255).to(torch.uint8))
            labels.append(organ)
    return TrainingMonitor(torch.stack(imgs), np.array(labels), torch.device("cpu"), batch_size=5)


def test_figures_of_a_random_teacher_are_in_range():
    m = _monitor().measure(_net(), IntraOrganLoss(out_dim=64), 0.04)
    assert set(m) >= {
        "monitor_knn_accuracy",
        "monitor_nmi",
        "embed_std",
        "teacher_entropy",
        "teacher_mi",
        "ln_k",
        "center_norm",
    }
    assert m["ln_k"] == pytest.approx(math.log(64))
    assert 0 <= m["teacher_entropy"] <= m["ln_k"] + 1e-6
    assert m["teacher_mi"] >= -1e-6
    assert 0 < m["embed_std"]
    assert m["center_norm"] == 0


def test_entropy_and_information_against_a_direct_computation():
    mon, net = _monitor(), _net(1)
    center = 0.1 * torch.randn(1, 64)
    loss = IntraOrganLoss(out_dim=64)
    loss.center.copy_(center)
    m = mon.measure(net, loss, 0.07)
    with torch.no_grad():
        t = net.head_ins(net.encoder(mon.images)).double()
    p = torch.softmax((t - center.double()) / 0.07, dim=1)
    h = [-(row * row.log()).sum().item() for row in p]
    marginal = p.mean(0)
    assert m["teacher_entropy"] == pytest.approx(np.mean(h), rel=1e-4)
    assert m["teacher_mi"] == pytest.approx(-(marginal * marginal.log()).sum().item() - np.mean(h), abs=1e-4)
    assert m["center_norm"] == pytest.approx(center.norm().item(), rel=1e-6)


def test_a_collapsed_teacher_is_flagged():
    net = _net()
    head_norm = net.backbone.head.norm
    with torch.no_grad():  # every image -> the same pooled feature
        head_norm.weight.zero_()
        head_norm.bias.copy_(torch.randn_like(head_norm.bias))
    m = _monitor().measure(net, IntraOrganLoss(out_dim=64), 0.04)
    assert m["embed_std"] == pytest.approx(0, abs=1e-5)
    assert m["teacher_mi"] == pytest.approx(0, abs=1e-5)
    msgs = collapse_warnings(m)
    assert any("same target" in s for s in msgs) and any("same embedding" in s for s in msgs)


def test_healthy_figures_raise_no_warning_and_uniform_targets_do():
    healthy = {"teacher_entropy": 4.0, "ln_k": math.log(4096), "teacher_mi": 1.0, "embed_std": 0.5}
    assert collapse_warnings(healthy) == []
    uniform = dict(healthy, teacher_entropy=0.99 * math.log(4096))
    assert any("nearly uniform" in s for s in collapse_warnings(uniform))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=2, max_size=6),
    fraction=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_split_is_stratified_disjoint_and_complete(counts, fraction, seed):
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    train, held, why = monitor_split(labels, fraction, seed)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(labels)))
    if why is None:
        for i, c in enumerate(counts):
            n = int((labels[held] == i).sum())
            assert n == int(round(fraction * c)) >= MIN_PER_ORGAN
            assert c - n >= 2
    else:
        assert len(held) == 0
    again = monitor_split(labels, fraction, seed)
    assert np.array_equal(again[1], held)


def test_metrics_file_keeps_the_epochs_a_resumed_run_continues(tmp_path):
    import json

    from codafeat._train.metrics_sink import MetricsSink

    sink = MetricsSink(tmp_path)
    for e in (1, 2, 3):
        sink.write({"epoch": e, "loss": float(e), "nan": float("nan")})
    sink.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3] and lines[0]["nan"] is None
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "lo')  # a line cut by a crash
    MetricsSink(tmp_path, keep_through_epoch=2).close()  # resumed after epoch 2
    assert [json.loads(x)["epoch"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    MetricsSink(tmp_path).close()  # a fresh run
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert MetricsSink(None).path is None


def test_within_organ_spread_and_rank_see_an_organ_collapse_to_a_point():
    from codafeat._train.monitor import within_organ_spread

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    spread_out = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((80, 16))).float(), dim=1)
    centres = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((2, 16))).float(), dim=1)
    collapsed = torch.nn.functional.normalize(centres[labels] + 0.01 * torch.randn(80, 16), dim=1)
    wide, narrow = within_organ_spread(spread_out, labels), within_organ_spread(collapsed, labels)
    assert wide["organ_spread"] > 0.8 and narrow["organ_spread"] < 0.01
    assert wide["organ_rank"] > 10 and narrow["organ_rank"] > 5, "rank measures directions, not size"
    line = within_organ_spread(
        torch.nn.functional.normalize(torch.tensor([[1.0, t, 0.0] for t in np.linspace(0, 1, 9)]), dim=1),
        np.zeros(9, int),
    )
    assert line["organ_rank"] < 1.5, "points along one curve use about one direction"
