"""What a run's settings make: views, terms, networks, schedules, trainer (codafeat._train.build)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from codafeat import CodaPretrainer
from codafeat._defaults import MEAN, STD
from codafeat._device import DevicePolicy
from codafeat._train import dist as D
from codafeat._train.build import build_trainer, new_network, schedules_of, terms_of, views_of
from codafeat._train.run import settings_of
from codafeat.formats.weights import Weights, make_config

from helpers import TINY_PRETRAIN as TINY


def _settings(**change) -> SimpleNamespace:
    return settings_of(CodaPretrainer(**dict(TINY, **change)))


def test_the_views_carry_every_view_setting():
    s = _settings(n_local_crops=3, rotation=5.0, hflip=True, blur_prob=0.3, gamma=(0.9, 1.1))
    v = views_of(s)
    assert (v.n_local_crops, v.rotation, v.hflip, v.gamma) == (3, 5.0, True, (0.9, 1.1))
    assert v.blur_prob == (0.3, 0.3, 0.3)  # one number: every view


@pytest.mark.parametrize(
    "change, org, ins",
    [({}, True, True), ({"lambda_intra": 0.0}, True, False), ({"lambda_inter": 0.0}, False, True)],
)
def test_the_network_has_the_heads_of_the_terms_that_are_on(change, org, ins):
    s = _settings(**change)
    terms = terms_of(s)
    assert (terms.inter, terms.intra) == (org, ins)
    net = new_network(s)
    assert (net.head_org is not None, net.head_ins is not None) == (org, ins)


def test_no_term_to_train_is_refused_by_the_objective():
    with pytest.raises(ValueError, match="lambda"):
        terms_of(_settings(lambda_inter=0.0, lambda_intra=0.0))


def test_schedules_span_the_run_and_a_too_long_warmup_is_shortened(caplog):
    s = _settings(epochs=3, warmup_epochs=5, lr=1e-3, min_lr=1e-5)
    with caplog.at_level(logging.WARNING, logger="codafeat._train.build"):
        sched = schedules_of(s, steps=4)
    assert "warm-up shortened to 2" in caplog.text
    assert len(sched.lr) == len(sched.weight_decay) == len(sched.momentum) == 12 and len(sched.teacher_temp) == 3
    assert sched.lr[0] == 0.0 and sched.lr.max() == pytest.approx(1e-3) and sched.lr[-1] >= 1e-5
    assert sched.momentum[-1] == pytest.approx(1.0)


def test_the_trainer_starts_from_the_seed_with_the_teacher_equal_to_the_student():
    s = _settings()
    policy, info = DevicePolicy(torch.device("cpu")), D.DistInfo()
    a, source = build_trainer(s, seed=7, steps=2, policy=policy, info=info)
    b, _ = build_trainer(s, seed=7, steps=2, policy=policy, info=info)
    c, _ = build_trainer(s, seed=8, steps=2, policy=policy, info=info)
    assert source == "random"
    sa, sb, sc = (t.student_module.state_dict() for t in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    teacher = a.teacher.state_dict()
    assert all(torch.equal(sa[k], teacher[k]) for k in sa)
    assert all(not p.requires_grad for p in a.teacher.parameters())


def test_a_warm_start_loads_the_backbone_and_records_its_source():
    s = _settings()
    donor = new_network(s).backbone
    with torch.no_grad():
        for p in donor.parameters():
            p.fill_(0.5)
    config = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=MEAN, std=STD)
    weights = Weights.from_state(donor.state_dict(), config, source="the donor")
    trainer, source = build_trainer(
        _settings(init_weights=weights), seed=0, steps=1, policy=DevicePolicy(torch.device("cpu")), info=D.DistInfo()
    )
    assert "donor" in source
    backbone = trainer.student_module.backbone.state_dict()
    assert all(np.allclose(v.numpy(), 0.5) for k, v in backbone.items() if v.is_floating_point())
    assert not all(np.allclose(p.detach().numpy(), 0.5) for p in trainer.student_module.head_ins.parameters())
