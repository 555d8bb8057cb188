"""Output paths never destroy the model or an input (issue 19, items 4 and 9).

Every case is refused before any work: ``fit`` / ``transform`` are replaced by a recorder,
and the inputs are checked byte for byte afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codafeat import CodaEncoder
from codafeat.cli import main
from codafeat.pretrain import CodaPretrainer

from helpers import make_organ_folder


@pytest.fixture
def data(tmp_path):
    return make_organ_folder(tmp_path / "data", {"chest": 4, "hand": 4})


@pytest.fixture
def no_training(monkeypatch):
    calls = []
    monkeypatch.setattr(CodaPretrainer, "fit", lambda self, *a, **k: calls.append("fit") or self)
    monkeypatch.setattr(CodaEncoder, "transform", lambda self, *a, **k: calls.append("transform"))
    return calls


def _weights(path: Path) -> Path:
    return CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit().save(path)


@pytest.mark.parametrize("case", ["same-file", "an-input", "inside-input", "existing-foreign", "history-is-input"])
def test_pretrain_refuses_outputs_that_destroy_something(tmp_path, data, no_training, caplog, case):
    image = data / "chest" / "chest_000.png"
    before = image.read_bytes()
    (tmp_path / "notes.txt").write_text("my notes")
    out, extra = str(tmp_path / "m.safetensors"), []
    if case == "same-file":
        extra, message = ["--history", out], "same file"
    elif case == "an-input":
        out, message = str(image), "inside the input folder"
    elif case == "inside-input":
        out, message = str(data / "chest" / "m.safetensors"), "inside the input folder"
    elif case == "existing-foreign":
        out, message = str(tmp_path / "notes.txt"), "not codafeat weights"
    else:
        extra, message = ["--history", str(image)], "inside the input folder"
    rc = main(["pretrain", str(data), "--out", out, "--epochs", "1", *extra])
    assert rc == 1 and not no_training and message in caplog.text
    assert image.read_bytes() == before and (tmp_path / "notes.txt").read_text() == "my notes"


def test_pretrain_replaces_weights_and_overwrite_replaces_anything(tmp_path, data, no_training, monkeypatch):
    monkeypatch.setattr(CodaPretrainer, "save", lambda self, path: Path(path))
    monkeypatch.setattr(CodaPretrainer, "history_", [], raising=False)
    monkeypatch.setattr(CodaPretrainer, "n_images_", 8, raising=False)
    monkeypatch.setattr(CodaPretrainer, "organs_", ["chest", "hand"], raising=False)
    old = _weights(tmp_path / "old.safetensors")
    assert main(["pretrain", str(data), "--out", str(old), "--epochs", "1"]) == 0  # earlier weights: replaced
    (tmp_path / "notes.txt").write_text("my notes")
    assert main(["pretrain", str(data), "--out", str(tmp_path / "notes.txt"), "--epochs", "1", "--overwrite"]) == 0


def test_pretrain_from_a_manifest_refuses_a_listed_file(tmp_path, data, no_training, caplog):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,organ\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(data.rglob("*.png"))))
    listed = sorted(data.rglob("*.png"))[0]
    assert main(["pretrain", str(manifest), "--out", str(listed), "--epochs", "1"]) == 1
    assert "one of the inputs" in caplog.text and not no_training


@pytest.mark.parametrize("case", ["inside-input", "existing-foreign", "sidecar-is-input"])
def test_embed_refuses_outputs_that_destroy_something(tmp_path, data, no_training, caplog, case):
    weights = _weights(tmp_path / "w.safetensors")
    (tmp_path / "notes.npy").write_text("not an array")
    out = {
        "inside-input": data / "e.npy",
        "existing-foreign": tmp_path / "notes.npy",
        "sidecar-is-input": tmp_path / "x.npy",
    }[case]
    inputs = [str(data)]
    if case == "sidecar-is-input":
        (tmp_path / "x.paths.txt").write_text("mine")
        inputs.append(str(tmp_path / "x.paths.txt"))
    assert main(["embed", *inputs, "--weights", str(weights), "--out", str(out)]) == 1
    assert not no_training and (
        "inside the input folder" in caplog.text
        or "not an embeddings file" in caplog.text
        or "one of the inputs" in caplog.text
    )


def test_embed_refuses_names_with_line_breaks_for_npy_but_csv_keeps_them(tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b\nc.png", "d.png"):
        Image.fromarray(np.full((36, 36), 120, np.uint8)).save(folder / name)
    weights = _weights(tmp_path / "w.safetensors")
    assert (
        main(["embed", str(folder), "--weights", str(weights), "--out", str(tmp_path / "e.npy"), "--num-workers", "0"])
        == 1
    )
    assert "line break" in caplog.text and not (tmp_path / "e.npy").exists()
    assert (
        main(["embed", str(folder), "--weights", str(weights), "--out", str(tmp_path / "e.csv"), "--num-workers", "0"])
        == 0
    )
    import csv

    rows = list(csv.reader((tmp_path / "e.csv").open(newline="")))
    assert [Path(r[0]).name for r in rows[1:]] == ["a.png", "b\nc.png", "d.png"]


def test_export_and_package_weights_refuse_to_overwrite_their_input(tmp_path, caplog):
    folder = tmp_path / "hub"
    folder.mkdir()
    weights = _weights(folder / "model.safetensors")
    before = weights.read_bytes()
    assert main(["export", str(weights), "--out", str(folder)]) == 1
    assert "one of the inputs" in caplog.text and weights.read_bytes() == before
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("not json")
    assert main(["export", str(weights), "--out", str(tmp_path / "out")]) == 1
    assert "not a JSON config" in caplog.text
    assert main(["package-weights", str(weights), "--name", "mine", "--out", str(weights)]) == 1
    assert weights.read_bytes() == before


def test_embed_reads_a_plain_timm_checkpoint_with_backbone(tmp_path, caplog):
    """The error for a plain checkpoint tells the user to pass a backbone: the command takes one (item 13)."""
    import timm
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file(timm.create_model("test_convnext", num_classes=0).state_dict(), str(plain))
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((40, 40), 99, np.uint8)).save(folder / "a.png")
    out = tmp_path / "e.csv"
    assert main(["embed", str(folder), "--weights", str(plain), "--out", str(out), "--num-workers", "0"]) == 1
    assert "backbone" in caplog.text
    assert (
        main(
            [
                "embed",
                str(folder),
                "--weights",
                str(plain),
                "--backbone",
                "test_convnext",
                "--image-size",
                "32",
                "--out",
                str(out),
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    assert out.read_text().count("\n") == 2
