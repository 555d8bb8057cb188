"""Dice / IoU helpers: hand-computed references and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from codafeat.metrics import dice, iou, overlap_counts


def test_hand_computed_binary():
    t = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])  # 4 foreground pixels
    p = np.array([[1, 1, 1, 0], [0, 0, 1, 0]])  # 4 foreground, 3 shared
    # union = 4 + 4 - 3 = 5
    assert iou(t, p) == pytest.approx(3 / 5)
    assert dice(t, p) == pytest.approx(2 * 3 / 8)


def test_hand_computed_multiclass_per_class_and_macro():
    t = np.array([[0, 1, 1, 2, 2, 2]])
    p = np.array([[1, 1, 0, 2, 2, 0]])
    # class 1: inter 1, |t| 2, |p| 2 -> iou 1/3, dice 1/2
    # class 2: inter 2, |t| 3, |p| 2 -> iou 2/3, dice 4/5
    np.testing.assert_allclose(iou(t, p, average=None), [1 / 3, 2 / 3])
    np.testing.assert_allclose(dice(t, p, average=None), [1 / 2, 4 / 5])
    assert iou(t, p) == pytest.approx(0.5)
    # background included on request: class 0: inter 0, |t| 1, |p| 2 -> 0
    np.testing.assert_allclose(iou(t, p, labels=[0, 1, 2], average=None), [0, 1 / 3, 2 / 3])


def test_mean_over_images_not_pooled():
    # image 0: perfect (iou 1); image 1: 1 of 3 pixels (iou 1/3). Per-image mean = 2/3,
    # while pooling the pixels would give (4 + 1) / (4 + 3) = 5/7.
    t = [np.array([[1, 1], [1, 1]]), np.array([[1, 1, 1]])]
    p = [np.array([[1, 1], [1, 1]]), np.array([[1, 0, 0]])]
    assert iou(t, p) == pytest.approx(2 / 3)


def test_absent_class_counts_as_zero_division():
    t = np.zeros((2, 3, 3), dtype=np.uint8)
    p = np.zeros((2, 3, 3), dtype=np.uint8)
    t[0, 0, 0] = p[0, 0, 0] = 1  # image 0 perfect, image 1: class 1 absent from both
    assert iou(t, p, labels=[1]) == 1.0
    assert iou(t, p, labels=[1], zero_division=0.0) == 0.5


def test_overlap_counts():
    t = np.array([[[0, 1, 1]]])
    p = np.array([[[1, 1, 0]]])
    inter, nt, npred = overlap_counts(t, p, [1])
    assert inter.tolist() == [[1]] and nt.tolist() == [[2]] and npred.tolist() == [[2]]


def test_errors():
    with pytest.raises(ValueError, match="mask 1"):
        iou([np.zeros((2, 2), int), np.zeros((2, 2), int)], [np.zeros((2, 2), int), np.zeros((3, 2), int)])
    with pytest.raises(ValueError, match="2 mask"):
        iou(np.zeros((2, 4, 4), int), np.zeros((3, 4, 4), int))
    with pytest.raises(ValueError, match="integer"):
        iou(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no foreground"):
        iou(np.zeros((4, 4), int), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="average"):
        dice(np.ones((2, 2), int), np.ones((2, 2), int), average="micro")


masks = arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 2))


@st.composite
def mask_pairs(draw):
    a = draw(masks)
    b = draw(arrays(np.uint8, a.shape, elements=st.integers(0, 2)))
    return a, b


@settings(max_examples=60, deadline=None)
@given(mask_pairs())
def test_properties(pair):
    a, b = pair
    labels = [1, 2]
    for f in (iou, dice):
        s_ab = f(a, b, labels=labels, average=None)
        assert np.all((s_ab >= 0) & (s_ab <= 1))
        np.testing.assert_allclose(s_ab, f(b, a, labels=labels, average=None))  # symmetric
        np.testing.assert_allclose(f(a, a, labels=labels, average=None), 1.0)  # perfect prediction
    # per image and class, dice = 2 iou / (1 + iou); check on single images
    for i in range(a.shape[0]):
        j = iou(a[i], b[i], labels=labels, average=None)
        d = dice(a[i], b[i], labels=labels, average=None)
        np.testing.assert_allclose(d, 2 * j / (1 + j))
        assert np.all(d >= j - 1e-12)
