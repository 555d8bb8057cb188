"""The config a weights file records: make_config, check_config, config_json (codafeat.formats.config)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codafeat._defaults import MAX_IMAGE_SIZE, POOLING
from codafeat.formats.config import (
    CONFIG_MAXIMA,
    DEFAULT_INTENDED_USE,
    FORMAT_VERSION,
    check_config,
    config_json,
    make_config,
)
from codafeat.formats.errors import WeightsError

from helpers import tiny_config


def test_a_made_config_survives_its_json_unchanged():
    cfg = tiny_config(training={"history": np.arange(3), "final_loss": np.float32(0.5)})
    back = json.loads(config_json(cfg))
    assert back["training"] == {"history": [0, 1, 2], "final_loss": 0.5}
    assert check_config(back, "x") == back and back["format_version"] == FORMAT_VERSION


def test_the_json_is_canonical_whatever_the_key_order():
    cfg = tiny_config()
    reordered = dict(reversed(list(cfg.items())))
    assert config_json(cfg) == config_json(reordered) == config_json(json.loads(config_json(cfg)))


def test_an_old_config_gets_the_defaults_of_its_time():
    old = {"backbone": "test_convnext", "embed_dim": 64, "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    cfg = check_config(old, "old.safetensors")
    assert (cfg["in_chans"], cfg["pooling"], cfg["license"], cfg["data"]) == (3, POOLING, "unknown", {})
    assert cfg["intended_use"] == DEFAULT_INTENDED_USE and old.get("in_chans") is None  # the input is not changed


def test_the_input_size_bound_is_the_one_of_the_estimators():
    assert CONFIG_MAXIMA["image_size"] == MAX_IMAGE_SIZE
    check_config(tiny_config(image_size=MAX_IMAGE_SIZE), "x")
    with pytest.raises(WeightsError, match=rf"x: config 'image_size' must be an int in \[1, {MAX_IMAGE_SIZE}\]"):
        check_config(tiny_config(image_size=MAX_IMAGE_SIZE + 1), "x")


@pytest.mark.parametrize("key", sorted(CONFIG_MAXIMA))
def test_every_bound_names_its_key(key):
    with pytest.raises(WeightsError, match=f"'{key}'"):
        check_config(tiny_config(**{key: CONFIG_MAXIMA[key] + 1}), "f")
    with pytest.raises(WeightsError, match=f"'{key}'"):
        check_config(tiny_config(**{key: True}), "f")  # a bool is not an int here


def test_a_newer_format_asks_for_an_upgrade_and_a_bad_one_is_named():
    with pytest.raises(WeightsError, match="upgrade codafeat"):
        check_config(tiny_config(format_version=FORMAT_VERSION + 1), "f")
    with pytest.raises(WeightsError, match="'format_version' must be a positive int"):
        check_config(tiny_config(format_version=0), "f")


def test_extra_entries_may_not_replace_standard_keys():
    with pytest.raises(ValueError, match="may not replace standard keys"):
        make_config(backbone="b", embed_dim=1, image_size=8, mean=[0.5] * 3, std=[0.5] * 3, extra={"image_size": 9})


finite = st.floats(min_value=-10, max_value=10, allow_nan=False)


@given(
    n=st.integers(1, 4),
    mean=st.lists(finite, min_size=4, max_size=4),
    std=st.lists(st.floats(min_value=1e-3, max_value=10), min_size=4, max_size=4),
    bad=st.sampled_from([math.nan, math.inf, -1.0, 0.0]),
)
def test_normalisation_lists_are_checked_value_by_value(n, mean, std, bad):
    cfg = tiny_config(in_chans=n, mean=mean[:n], std=std[:n])
    assert check_config(cfg, "f")["mean"] == mean[:n]
    wrong = list(std[:n])
    wrong[-1] = bad
    with pytest.raises(WeightsError, match="'std'"):
        check_config(tiny_config(in_chans=n, mean=mean[:n], std=wrong), "f")
    with pytest.raises(WeightsError, match="'mean' has"):
        check_config(tiny_config(in_chans=n, mean=mean[: n - 1] + [0.0, 0.0], std=std[:n]), "f")
