"""torch.distributed helpers in one process (codafeat/_train/dist.py); the multi-process
behaviour is tested in tests/integration/test_resume_and_distributed.py."""

from __future__ import annotations

import torch

from codafeat._train import dist as D


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = D.setup("cpu")
    assert info == D.DistInfo() and info.is_main and not info.is_distributed
    x = torch.arange(6.0).view(3, 2)
    assert D.all_gather_cat(x, info) is x
    assert D.all_reduce_sum(x, info) is x
    assert D.broadcast_object({"a": 1}, info) == {"a": 1}
    m = torch.nn.Linear(2, 2)
    before = m.weight.clone()
    D.broadcast_module_(m, info)
    assert torch.equal(m.weight, before)
    D.barrier(info)
    D.teardown(info)


def test_torchrun_is_detected_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert not D.launched_by_torchrun()
    monkeypatch.setenv("RANK", "1")
    assert D.launched_by_torchrun()
