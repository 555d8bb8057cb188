"""Segmentation losses (codafeat/losses/segmentation.py) against plain re-derivations."""

from __future__ import annotations

import pytest
import torch

from codafeat.losses.segmentation import LOSSES, dice_loss, segmentation_loss


def test_losses_against_references():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    target = torch.randint(0, 3, (2, 5, 4))
    p = torch.softmax(logits, 1)
    ref = 0.0
    for c in (1, 2):  # foreground classes, pooled over the batch
        t = (target == c).float()
        ref += (2 * (p[:, c] * t).sum() + 1) / (p[:, c].sum() + t.sum() + 1)
    torch.testing.assert_close(dice_loss(logits, target), 1 - ref / 2)
    ce = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(segmentation_loss(logits, target, "ce"), ce)
    torch.testing.assert_close(segmentation_loss(logits, target, "dice"), 1 - ref / 2)
    torch.testing.assert_close(segmentation_loss(logits, target, "ce+dice"), ce + 1 - ref / 2)
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, target)) < 1e-3


def test_bf16_logits_are_scored_in_float32_and_unknown_kinds_refused():
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 4, 4))
    out = segmentation_loss(logits.bfloat16(), target, "ce+dice")
    assert out.dtype == torch.float32
    assert LOSSES == ("ce", "dice", "ce+dice")
    with pytest.raises(ValueError, match="loss must be one of"):
        segmentation_loss(logits, target, "focal")
