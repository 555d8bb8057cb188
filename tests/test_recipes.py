"""Named pretraining recipes."""

from __future__ import annotations

import inspect

import pytest

from codafeat import CodaPretrainer
from codafeat.recipes import RECIPES, get_recipe


def test_every_recipe_names_only_pretrainer_parameters_and_validates():
    params = set(inspect.signature(CodaPretrainer.__init__).parameters) - {"self"}
    for name, recipe in RECIPES.items():
        assert set(recipe) <= params, name
        CodaPretrainer(**recipe)._check_settings()


def test_overrides_and_copies():
    a = get_recipe("small", epochs=3)
    assert a["epochs"] == 3
    a["lr"] = 123.0
    assert get_recipe("small")["lr"] != 123.0
    assert get_recipe("paper") == {}
    with pytest.raises(ValueError, match="unknown recipe 'tiny'"):
        get_recipe("tiny")
