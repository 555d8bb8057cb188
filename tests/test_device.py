"""The device and precision policy (codafeat/_device.py)."""

from __future__ import annotations

import pytest
import torch

from codafeat._device import DevicePolicy, resolve_device
from codafeat.nn.backbone import FeatureExtractor, create_backbone


def test_cpu_policy_is_fp32_default_layout_unpinned():
    p = DevicePolicy(torch.device("cpu"))
    assert (p.channels_last, p.amp_dtype, p.precision, p.pin_memory) == (False, None, "fp32", False)
    x = torch.rand(2, 1, 8, 8)
    y = p.batch(x)
    assert y.is_contiguous() and y.device.type == "cpu"
    with p.autocast():
        z = torch.nn.Linear(4, 4)(torch.rand(2, 4))
    assert z.dtype == torch.float32, "the CPU runs in float32"


def test_cuda_policy_decides_bf16_and_channels_last_without_a_gpu():
    # the rules, read off a policy for a CUDA device (no tensor is placed)
    p = DevicePolicy(torch.device("cuda", 1))
    assert (p.channels_last, p.amp_dtype, p.precision, p.pin_memory) == (True, torch.bfloat16, "bf16", True)


def test_module_placement_tells_the_preprocessing_the_layout():
    model = FeatureExtractor(create_backbone("test_convnext"), (0.5,) * 3, (0.5,) * 3)
    model.pre.channels_last = True  # as left by a CUDA placement
    DevicePolicy(torch.device("cpu")).module(model)
    assert model.pre.channels_last is False


def test_resolve_device_rules(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
        assert resolve_device("auto") == torch.device("cpu")
    # under torchrun the CPU stays the CPU (LOCAL_RANK only picks among GPUs)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_follows_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda:0", local_rank=3) == torch.device("cuda", 3)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("cuda:0") == torch.device("cuda", 2), "every rank on cuda:0 is the bug of issue 12"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_more_processes_than_gpus_on_a_node_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match=r"LOCAL_RANK=2, but the node has 2 CUDA device\(s\).*--nproc_per_node=2"):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
