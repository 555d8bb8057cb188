"""One pretraining run, step by step (codafeat._train.run)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from codafeat import CodaPretrainer
from codafeat._train import dist as D
from codafeat._train.loop import CodaTrainer
from codafeat._train.run import (
    RESUME_KEYS,
    PretrainingResult,
    PretrainingRun,
    check_organs,
    resume_signature,
    run_pretraining,
    settings_of,
)

from helpers import TINY_PRETRAIN as TINY
from helpers import make_organ_folder


def _run(**change) -> PretrainingRun:
    settings = settings_of(CodaPretrainer(**dict(TINY, **change)))
    return PretrainingRun(settings, device=torch.device("cpu"), info=D.DistInfo())


def test_settings_are_a_snapshot_the_estimator_cannot_change_afterwards():
    pre = CodaPretrainer(**TINY)
    s = settings_of(pre)
    pre.set_params(epochs=99)
    assert s.epochs == TINY["epochs"] and set(vars(s)) == set(pre.get_params())
    assert set(resume_signature(s)) == set(RESUME_KEYS)


def test_prepare_finds_decodes_and_labels_the_images_and_names_what_it_skipped(tmp_path):
    folder = make_organ_folder(tmp_path / "data", {"chest": 4, "hand": 3}, seed=1)
    (folder / "hand" / "broken.png").write_bytes(b"not a png")
    run = _run(on_error="skip")
    run.prepare(folder, None)
    assert list(run.organs) == ["chest", "hand"] and sorted(np.bincount(run.labels)) == [3, 4]
    assert len(run.cache) == 7 and [p.endswith("broken.png") for p in run.skipped] == [True]
    assert run.data_summary["n_images"] == 7 and run.data_key is None  # no checkpoints: no data key
    again = _run(on_error="skip")
    again.prepare(folder, None)
    assert again.seed == run.seed  # random_state=0: the same seed


def test_an_organ_that_loses_its_images_to_decoding_is_named(tmp_path):
    folder = make_organ_folder(tmp_path / "data", {"chest": 3, "hand": 2}, seed=1)
    for p in (folder / "hand").iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(ValueError, match="readable images have 1"):
        _run(on_error="skip").prepare(folder, None)


def test_check_organs_names_the_short_organs():
    check_organs(["a", "a", "b", "b"], stage="input")
    with pytest.raises(ValueError, match=r"at least 2 organs.*\['a'\]"):
        check_organs(["a", "a"], stage="input")
    with pytest.raises(ValueError, match=r"these have one: \['b'\]"):
        check_organs(["a", "a", "b"], stage="input")


def test_the_loader_refuses_a_batch_the_processes_cannot_share(tmp_path):
    folder = make_organ_folder(tmp_path / "data", {"chest": 4, "hand": 4}, seed=1)
    run = _run(batch_size=6)
    run.prepare(folder, None)
    run.info = D.DistInfo(rank=0, world_size=4)  # as rank 0 of 4 would see it
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 processes"):
        run.loader(np.arange(8))


def test_a_run_returns_every_documented_fitted_attribute_and_a_failed_run_leaves_the_estimator_as_it_was(
    tmp_path, monkeypatch
):
    folder = make_organ_folder(tmp_path / "data", {"chest": 4, "hand": 4}, seed=1)
    result, device = run_pretraining(settings_of(CodaPretrainer(**dict(TINY, epochs=1))), folder)
    assert isinstance(result, PretrainingResult) and device == torch.device("cpu")
    doc = inspect.getdoc(CodaPretrainer)
    for name in result.attributes():
        assert f"{name} :" in doc or f"{name}, " in doc, f"{name} is not documented"
    assert result.weights.config["training"]["n_images"] == 8 and len(result.history) == 1

    pre = CodaPretrainer(**dict(TINY, epochs=1))

    def crash(self, *a, **k):
        raise RuntimeError("a crash mid-epoch")

    monkeypatch.setattr(CodaTrainer, "step", crash)
    with pytest.raises(RuntimeError, match="mid-epoch"):
        pre.fit(folder)
    assert not [k for k in vars(pre) if k.endswith("_") and not k.startswith("_")]


def test_fit_copies_the_run_onto_the_estimator(tmp_path):
    folder = make_organ_folder(tmp_path / "data", {"chest": 4, "hand": 4}, seed=1)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "hand" / "blank.png")
    pre = CodaPretrainer(**dict(TINY, epochs=1)).fit(folder)
    assert pre.n_images_ == 9 and list(pre.organs_) == ["chest", "hand"] and pre.skipped_ == []
    assert pre.encoder_.config_["training"]["final_loss"] == pre.history_[-1]["loss"]
    assert pre.intensity_["kinds"] and pre.init_weights_source_ == "random"
