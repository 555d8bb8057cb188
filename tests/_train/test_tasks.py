"""The fine-tuning tasks' losses and scores against plain re-derivations (codafeat/_train/tasks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codafeat._train.tasks import ClassificationTask, RegressionTask, SegmentationTask


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), k=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_cross_entropy_with_class_weights_matches_the_formula(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    logits, y = torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)
    w = torch.rand(k, generator=g) + 0.1
    logp = torch.log_softmax(logits.double(), 1)
    ref = -(w.double()[y] * logp[torch.arange(n), y]).sum() / w.double()[y].sum()  # torch's weighted mean
    got = ClassificationTask(class_weight=w).loss(logits, y)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_multilabel_uses_one_sigmoid_per_label():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    p = torch.sigmoid(logits.double())
    ref = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    task = ClassificationTask(multilabel=True)
    assert task.loss(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    assert task.score(logits, y) == 0.0  # subset accuracy: each row has one label wrong


def test_regression_scores_r2_and_segmentation_keeps_only_the_argmax():
    y = torch.tensor([[1.0], [2.0], [3.0]])
    assert RegressionTask().score(torch.full((3, 1), 2.0), y) == pytest.approx(0.0)
    assert np.isnan(RegressionTask().score(y[:1], y[:1]))  # R^2 of one value is undefined
    kept = SegmentationTask(3, "ce").keep(torch.randn(2, 3, 4, 4))
    assert kept.dtype == torch.uint8 and kept.shape == (2, 4, 4)
