"""Checkpoint files (codafeat/_train/checkpoint.py): atomic rotation, checks on reading, fallback."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from codafeat._train import checkpoint as C


def _module(value: float) -> torch.nn.Module:
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(value)
    return m


def _save(folder, value: float, epochs_done: int):
    m = _module(value)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.ones(1, 2)).sum().backward()
    opt.step()
    return C.save_checkpoint(
        C.checkpoint_path(folder),
        modules={"student": m, "center": torch.full((3,), value)},
        optimizer=opt,
        meta={"epochs_done": epochs_done, "params": {}, "history": []},
    )


def test_the_newest_and_the_previous_checkpoint_are_kept(tmp_path):
    _save(tmp_path, 1.0, 1)
    _save(tmp_path, 2.0, 2)
    path, tensors, meta = C.latest_checkpoint(tmp_path)
    assert path == C.checkpoint_path(tmp_path) and meta["epochs_done"] == 2
    assert torch.equal(tensors["center"], torch.full((3,), 2.0))
    _, previous_meta = C.load_checkpoint(C.previous_path(tmp_path))
    assert previous_meta["epochs_done"] == 1
    restored = torch.nn.Linear(2, 2)
    C.restore_module(restored, tensors, "student", source="test")
    assert torch.all(restored.bias != 0)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    _save(tmp_path, 1.0, 1)
    _save(tmp_path, 2.0, 2)
    C.checkpoint_path(tmp_path).write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        path, _, meta = C.latest_checkpoint(tmp_path)
    assert path == C.previous_path(tmp_path) and meta["epochs_done"] == 1
    assert "resuming from the previous checkpoint" in caplog.text
    assert C.latest_checkpoint(tmp_path / "empty") is None


@pytest.mark.parametrize(
    ("tensors", "meta", "match"),
    [
        ({"w": torch.tensor([float("nan")])}, {"epochs_done": 1}, "NaN or infinite"),
        ({"w": torch.ones(1)}, {"epochs_done": -1}, "epochs_done=-1"),
        ({"w": torch.ones(1)}, {"epochs_done": 1, "history": {}}, "history is a dict"),
        ({"w": torch.ones(1)}, [1, 2], "a JSON list"),
    ],
)
def test_a_checkpoint_that_cannot_be_resumed_from_is_named(tmp_path, tensors, meta, match):
    path = tmp_path / "checkpoint.safetensors"
    save_file(tensors, path, metadata={C._META_KEY: json.dumps(meta)})
    with pytest.raises(ValueError, match=match):
        C.load_checkpoint(path)
    save_file({"w": torch.ones(1)}, path)
    with pytest.raises(ValueError, match="without codafeat checkpoint metadata"):
        C.load_checkpoint(path)
