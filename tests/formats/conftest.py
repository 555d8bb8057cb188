"""Fixtures of the weights-format tests: a tiny backbone's state and a few images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codafeat.nn.backbone import create_backbone


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised timm ``test_convnext`` (seed 0)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_backbone("test_convnext").state_dict().items()}


@pytest.fixture
def images() -> np.ndarray:
    """Three random 40 x 40 greyscale images."""
    return np.random.RandomState(0).randint(0, 256, size=(3, 40, 40)).astype(np.uint8)
