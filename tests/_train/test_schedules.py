"""Cosine and teacher-temperature schedules: length, endpoints, warm-up, monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codafeat._train.schedules import cosine_schedule, teacher_temp_schedule


def reference_cosine(base, final, total, warmup, start):
    """The documented formula, one value at a time."""
    out = []
    n = total - warmup
    for i in range(total):
        if i < warmup:
            out.append(start + (base - start) * i / warmup)
        else:
            j = i - warmup
            out.append(final + 0.5 * (base - final) * (1 + math.cos(math.pi * j / max(n - 1, 1))))
    return np.array(out)


values = st.floats(-10, 10, allow_nan=False)


@settings(max_examples=80, deadline=None)
@given(base=values, final=values, start=values, total=st.integers(1, 300), data=st.data())
def test_cosine_schedule_properties(base, final, start, total, data):
    warmup = data.draw(st.integers(0, total))
    s = cosine_schedule(base, final, total, warmup_steps=warmup, warmup_start=start)
    assert s.shape == (total,) and s.dtype == np.float64 and np.isfinite(s).all()
    np.testing.assert_allclose(s, reference_cosine(base, final, total, warmup, start), rtol=1e-12, atol=1e-12)
    if warmup > 0:
        assert s[0] == start
        w = s[:warmup]
        # linear: constant increments
        if warmup > 1:
            np.testing.assert_allclose(np.diff(w), (base - start) / warmup, atol=1e-9)
    if warmup < total:
        assert s[warmup] == pytest.approx(base)
        if total - warmup >= 2:
            assert s[-1] == pytest.approx(final, abs=1e-12)
        # monotone from base to final after the warm-up
        d = np.diff(s[warmup:])
        if final <= base:
            assert (d <= 1e-12).all()
        else:
            assert (d >= -1e-12).all()


def test_midpoint_is_halfway():
    s = cosine_schedule(1.0, 0.2, 101)
    assert s[50] == pytest.approx(0.6)


def test_dino_momentum_and_weight_decay_shapes():
    steps = 10 * 7
    m = cosine_schedule(0.996, 1.0, steps)
    assert m[0] == 0.996 and m[-1] == 1.0 and (np.diff(m) >= 0).all() and (m <= 1.0).all()
    wd = cosine_schedule(0.04, 0.4, steps)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4)
    lr = cosine_schedule(1.25e-4, 1e-6, steps, warmup_steps=7)
    assert lr[0] == 0.0 and lr.argmax() == 7 and lr[7] == pytest.approx(1.25e-4)


def test_single_step_and_all_warmup():
    assert cosine_schedule(2.0, 1.0, 1).tolist() == [2.0]
    np.testing.assert_allclose(cosine_schedule(1.0, 0.0, 4, warmup_steps=4), [0.0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1.0, 0.0, 0), {}, "total_steps"),
        ((1.0, 0.0, 2.5), {}, "total_steps"),
        ((1.0, 0.0, 5), {"warmup_steps": 6}, "warmup_steps"),
        ((1.0, 0.0, 5), {"warmup_steps": -1}, "warmup_steps"),
        ((float("nan"), 0.0, 5), {}, "base"),
        ((1.0, float("inf"), 5), {}, "final"),
        ((1.0, 0.0, 5), {"warmup_start": "0"}, "warmup_start"),
        ((1.0, 0.0, True), {}, "total_steps"),
    ],
)
def test_cosine_schedule_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cosine_schedule(*args, **kwargs)


def test_cosine_schedule_accepts_numpy_scalars():
    s = cosine_schedule(np.float32(1.0), np.float64(0.0), np.int64(3), warmup_steps=np.int32(1))
    assert s.shape == (3,)


def test_teacher_temp_dino_defaults_are_constant():
    np.testing.assert_array_equal(teacher_temp_schedule(0.04, 0.04, 0, 5), np.full(5, 0.04))


@settings(max_examples=40, deadline=None)
@given(
    warm=st.floats(0.01, 0.2),
    final=st.floats(0.01, 0.2),
    epochs=st.integers(1, 50),
    data=st.data(),
)
def test_teacher_temp_schedule_properties(warm, final, epochs, data):
    w = data.draw(st.integers(0, epochs))
    s = teacher_temp_schedule(warm, final, w, epochs)
    assert s.shape == (epochs,)
    assert (s[w:] == final).all()
    if w >= 1:
        assert s[0] == warm
        if w >= 2:  # DINO's linspace reaches the final value on the last warm-up epoch
            assert s[w - 1] == pytest.approx(final)
        d = np.diff(s[:w])
        assert ((d >= -1e-15) if final >= warm else (d <= 1e-15)).all()


def test_teacher_temp_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_epochs"):
        teacher_temp_schedule(0.04, 0.07, 6, 5)
    with pytest.raises(ValueError, match="> 0"):
        teacher_temp_schedule(0.0, 0.07, 1, 5)
    with pytest.raises(ValueError, match="epochs"):
        teacher_temp_schedule(0.04, 0.07, 0, 0)
