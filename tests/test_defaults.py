"""The one table of defaults (codafeat/_defaults.py) against the estimator and the command line."""

from __future__ import annotations

import inspect
import re

import pytest

from codafeat import _defaults as D
from codafeat.cli import build_parser
from codafeat.pretrain import CodaPretrainer


def test_every_pretrainer_parameter_has_its_default_from_the_table():
    sig = inspect.signature(CodaPretrainer.__init__).parameters
    params = {k: p.default for k, p in sig.items() if k != "self"}
    assert set(params) == set(D.PRETRAIN), "the signature and the table name the same parameters"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for k, p in sig.items() if k != "self")
    assert {k: v for k, v in params.items() if v != D.PRETRAIN[k]} == {}
    assert set(CodaPretrainer._parameter_constraints) == set(D.PRETRAIN)
    assert D.PRETRAIN_RUN_ONLY <= set(D.PRETRAIN)


def test_the_docstring_documents_every_parameter_with_its_default():
    doc = CodaPretrainer.__doc__
    documented = {}  # numpydoc groups parameters that share a line: "brightness, contrast : float, default=0.4"
    for names, shown in re.findall(r"^    (\w+(?:, \w+)*) : .*default=(.+)$", doc, flags=re.M):
        names, shown = names.split(", "), shown.strip().replace('"', "'")
        values = shown.split(", ") if len(names) > 1 and len(shown.split(", ")) == len(names) else [shown] * len(names)
        documented.update(zip(names, values))  # "a, b : float, default=0.04, 0.4": one each
    for name, default in D.PRETRAIN.items():
        assert name in documented, f"{name} is not documented as '{name} : type, default=...'"
        shown = documented[name]
        try:
            same = float(shown) == default  # "1.25e-4" is 0.000125
        except (TypeError, ValueError):
            same = shown in (repr(default), str(default))
        assert same, f"{name}: the docstring says {shown}, the table {default!r}"


def test_the_command_line_offers_every_pretrainer_parameter_with_the_table_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["pretrain"]
    options = {a.dest: a.default for a in sub._actions}
    for name, default in D.PRETRAIN.items():
        if name in ("verbose",):  # the command shows a progress bar by default
            continue
        assert name in options, f"codafeat pretrain has no --{name.replace('_', '-')}"
        if name != "random_state":
            assert options[name] == default or list(options[name] or []) == list(default or []), name


def test_constraints_and_resume_keys_come_from_the_table():
    from sklearn.utils._param_validation import validate_parameter_constraints

    from codafeat._train.run import RESUME_KEYS

    assert set(RESUME_KEYS) == {k for k, row in D.PRETRAIN_PARAMS.items() if not row.run_only}
    # every default passes its own row's constraint, and a value outside a row's range is refused by name
    validate_parameter_constraints(CodaPretrainer._parameter_constraints, D.PRETRAIN, caller_name="CodaPretrainer")
    for name in ("n_local_crops", "epochs", "batch_size", "accumulate_steps"):
        low = D.PRETRAIN_PARAMS[name].accepts[0][1]
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            CodaPretrainer(**{name: low - 1})._validate_params()
    with pytest.raises(ValueError, match="'organ_from' parameter"):
        CodaPretrainer(organ_from="tags")._validate_params()
