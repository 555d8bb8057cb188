"""Tests of the ``codafeat embed`` and ``codafeat probe`` commands and of examples/ (run in-process)."""

from __future__ import annotations

import csv
import logging
import py_compile
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from codafeat import CodaEncoder
from codafeat.cli import main
from codafeat.data.manifest import scan_organ_folder, write_image_folder
from codafeat.fewshot.probes import format_table, knn_probe, linear_probe
from codafeat.phantoms import make_radiograph_phantoms

SIZE = 32
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("pipeline_quickstart.py", "few_shot_probe.py", "zero_shot_plot.py", "segmentation.py", "timm_and_smp.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    weights = (
        CodaEncoder(backbone="test_convnext", image_size=SIZE, random_state=0).fit().save(root / "tiny.safetensors")
    )
    X, organ = make_radiograph_phantoms(
        6, organs=("chest", "hand", "knee"), image_size=SIZE, random_state=0, return_variants=False
    )
    data = write_image_folder(X, organ, root / "data")
    paths, labels = scan_organ_folder(data)
    ref = CodaEncoder(weights=weights, device="cpu").fit().transform(paths)
    return {"root": root, "weights": str(weights), "data": str(data), "paths": paths, "labels": labels, "ref": ref}


def common(setup):
    return ["--weights", setup["weights"], "--device", "cpu", "--verbose", "0"]


# --------------------------------------------------------------------------- embed
def test_embed_folder_to_npy(setup, tmp_path):
    out = tmp_path / "feats.npy"
    assert main(["embed", setup["data"], "--out", str(out), *common(setup)]) == 0
    emb = np.load(out, allow_pickle=False)
    assert emb.dtype == np.float32 and emb.shape == (18, 64)
    np.testing.assert_allclose(emb, setup["ref"], rtol=1e-5, atol=1e-6)
    listed = (tmp_path / "feats.paths.txt").read_text().splitlines()
    assert listed == setup["paths"]


def test_embed_with_cache_embeds_once(setup, tmp_path, caplog):
    cache = tmp_path / "cache"
    args = ["embed", setup["data"], "--cache", str(cache), "--num-workers", "auto", *common(setup)]
    assert main([*args, "--out", str(tmp_path / "a.npy")]) == 0
    assert len(list(cache.rglob("*.emb"))) == 18
    with caplog.at_level(logging.INFO, logger="codafeat"):
        assert main([*args, "--out", str(tmp_path / "b.npy")]) == 0
    assert "18 hit(s), 0 image(s) to embed" in caplog.text
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), setup["ref"], rtol=1e-5, atol=1e-6)
    with pytest.raises(SystemExit):
        main(["embed", setup["data"], "--out", str(tmp_path / "c.npy"), "--num-workers", "-1", *common(setup)])


def test_embed_files_in_given_order_to_csv(setup, tmp_path):
    picked = [setup["paths"][5], setup["paths"][0]]
    out = tmp_path / "feats.csv"
    assert main(["embed", *picked, "--out", str(out), "--batch-size", "1", *common(setup)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path"] + [f"f{i}" for i in range(64)]
    assert [r[0] for r in rows[1:]] == picked
    got = np.array([[float(x) for x in r[1:]] for r in rows[1:]], dtype=np.float32)
    np.testing.assert_allclose(got, setup["ref"][[5, 0]], rtol=1e-5, atol=1e-6)


def test_embed_parquet(setup, tmp_path, monkeypatch, caplog):
    out = tmp_path / "feats.parquet"
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        pd = None
    if pd is not None:
        assert main(["embed", setup["data"], "--out", str(out), *common(setup)]) == 0
        df = pd.read_parquet(out)
        assert list(df.columns[:2]) == ["path", "f0"] and df["path"].tolist() == setup["paths"]
        np.testing.assert_allclose(df.iloc[:, 1:].to_numpy(), setup["ref"], rtol=1e-5, atol=1e-6)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    with caplog.at_level(logging.ERROR):
        assert main(["embed", setup["data"], "--out", str(tmp_path / "x.parquet"), *common(setup)]) == 1
    assert "pip install 'codafeat[parquet]'" in caplog.text
    assert not (tmp_path / "x.parquet").exists()


def test_embed_errors(setup, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["embed", setup["data"], "--out", str(tmp_path / "f.txt"), *common(setup)]) == 1
        assert "unsupported format .txt" in caplog.text
        assert main(["embed", str(tmp_path / "nope"), "--out", str(tmp_path / "f.npy"), *common(setup)]) == 1
        assert "neither an image file nor a folder" in caplog.text
        (tmp_path / "empty").mkdir()
        assert main(["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "f.npy"), *common(setup)]) == 1
        assert "no images found" in caplog.text
    with pytest.raises(SystemExit):
        main(["embed", setup["data"], "--out", str(tmp_path / "f.npy")])  # --weights is required


def test_embed_npy_replaces_its_own_path_list_but_not_an_unrelated_paths_txt(setup, tmp_path, caplog):
    """Issue 27: ``--out X.npy`` replaced any existing ``X.paths.txt`` without ``--overwrite``."""
    notes = tmp_path / "X.paths.txt"
    notes.write_text("my notes, not a path list\n")
    args = ["embed", setup["data"], "--out", str(tmp_path / "X.npy"), *common(setup)]
    with caplog.at_level(logging.ERROR):
        assert main(args) == 1
    assert "X.paths.txt exists and is not the path list of an embeddings .npy" in caplog.text
    assert notes.read_text() == "my notes, not a path list\n" and not (tmp_path / "X.npy").exists()
    assert main([*args, "--overwrite"]) == 0
    assert notes.read_text().splitlines() == setup["paths"]
    assert main(args) == 0, "the path list of the earlier .npy is replaced without --overwrite"


def test_embed_skips_unreadable_images_as_nan_rows(setup, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "f.npy"
    with pytest.warns(UserWarning, match="broken.png"):
        rc = main(["embed", setup["paths"][0], str(bad), "--out", str(out), "--on-error", "skip", *common(setup)])
    assert rc == 0
    emb = np.load(out)
    assert np.isfinite(emb[0]).all() and np.isnan(emb[1]).all()
    assert main(["embed", str(bad), "--out", str(out), *common(setup)]) == 1  # default: raise


# --------------------------------------------------------------------------- probe
def test_probe_prints_the_few_shot_table(setup, capsys):
    args = ["probe", "--data", setup["data"], "--shots", "1", "3", "--n-repeats", "2", *common(setup)]
    assert main(args) == 0
    out = capsys.readouterr().out
    emb, y = setup["ref"], setup["labels"]
    ref = knn_probe(emb, y, shots=[1, 3], n_repeats=2, name="tiny kNN (k=5)") + linear_probe(
        emb, y, shots=[1, 3], n_repeats=2, name="tiny linear"
    )
    assert out.startswith("18 images, 3 classes\n")
    assert format_table(ref) in out
    assert "| Method (accuracy %) | 1-shot (n=3) | 3-shot (n=9) |" in out


def test_probe_with_manifest_fractions_and_random_baseline(setup, tmp_path, capsys):
    manifest = setup["data"] + "/labels.csv"
    md = tmp_path / "table.md"
    args = [
        "probe",
        "--labels-csv",
        manifest,
        "--fractions",
        "0.2",
        "0.5",
        "--n-repeats",
        "2",
        "--probe",
        "linear",
        "--compare-random",
        "--out",
        str(md),
        *common(setup),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| Method (accuracy %) | 20% (n=4) | 50% (n=9) |"
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| tiny linear", "| random init linear"]
    assert md.read_text().strip() == "\n".join(out.strip().splitlines()[2:])
    # --data also takes a manifest
    assert (
        main(["probe", "--data", manifest, "--shots", "2", "--n-repeats", "1", "--probe", "knn", *common(setup)]) == 0
    )


def test_probe_errors(setup, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["probe", "--data", setup["data"], "--shots", "9", "--n-repeats", "1", *common(setup)]) == 1
        assert "n_shots=9 is more than the images available" in caplog.text
        one = tmp_path / "one" / "knee"
        one.mkdir(parents=True)
        import shutil

        shutil.copy(setup["paths"][0], one / "a.png")
        assert main(["probe", "--data", str(tmp_path / "one"), *common(setup)]) == 1
        assert "at least two classes" in caplog.text
    with pytest.raises(SystemExit):
        main(["probe", "--data", setup["data"], "--shots", "1", "--fractions", "0.5", *common(setup)])
    with pytest.raises(SystemExit):
        main(["probe", "--weights", setup["weights"]])  # no data


# --------------------------------------------------------------------------- examples/


def load(name):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")  # defines main(), runs nothing


@pytest.mark.parametrize("name", NAMES)
def test_examples_compile(name):
    py_compile.compile(str(EXAMPLES / name), doraise=True)


def test_pipeline_quickstart(capsys):
    acc = load("pipeline_quickstart.py")["main"](
        ["--n-per-organ", "3", "--image-size", "32", "--shots", "1", "--n-repeats", "2", "--device", "cpu"]
    )
    assert 0.0 <= acc <= 1.0
    assert "1-shot organ accuracy over 2 draws" in capsys.readouterr().out


def test_few_shot_probe_with_weights_and_a_folder(tmp_path, capsys):
    from codafeat import CodaEncoder
    from codafeat.data.manifest import write_image_folder
    from codafeat.phantoms import make_radiograph_phantoms

    w = CodaEncoder(backbone="test_convnext", image_size=32, random_state=1).fit().save(tmp_path / "w.safetensors")
    X, y = make_radiograph_phantoms(4, organs=("hand", "knee"), image_size=32, random_state=0, return_variants=False)
    write_image_folder(X, y, tmp_path / "data")
    report = load("few_shot_probe.py")["main"](
        [
            "--weights",
            str(w),
            "--data",
            str(tmp_path / "data"),
            "--fractions",
            "0.5",
            "--n-repeats",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert report.methods == ("kNN (k=5)", "linear") and report.scoring == "roc_auc"
    assert "| Method (roc_auc %) | 50% (n=4) |" in capsys.readouterr().out


def test_zero_shot_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    organ, variant, path = load("zero_shot_plot.py")["main"](
        [
            "--n-per-organ",
            "4",
            "--image-size",
            "32",
            "--method",
            "pca",
            "--out",
            str(tmp_path / "z.png"),
            "--device",
            "cpu",
        ]
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert 0.0 <= organ["knn_accuracy"] <= 1.0 and np.isfinite(variant["mean"]["ari"])
    assert "organ separation:" in capsys.readouterr().out


def test_segmentation_example_synthetic(capsys):
    score, d = load("segmentation.py")["main"](
        ["--backbone", "test_convnext", "--image-size", "32", "--epochs", "2", "--n-synthetic", "8", "--device", "cpu"]
    )
    assert 0.0 <= score <= 1.0 and 0.0 <= d <= 1.0
    assert "trained on 3 image(s), tested on 2" in capsys.readouterr().out


def test_segmentation_example_on_paired_folders(tmp_path, capsys):
    from PIL import Image

    example = load("segmentation.py")
    X, Y = example["synthetic_blobs"](6, 40, seed=1)
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(6):
        Image.fromarray((X[i] * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(Y[i] * 255).save(tmp_path / "msk" / f"{i}.png")
    score, d = example["main"](
        [
            "--backbone",
            "test_convnext",
            "--images",
            str(tmp_path / "img"),
            "--masks",
            str(tmp_path / "msk"),
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--fraction",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert 0.0 <= score <= 1.0 and 0.0 <= d <= 1.0
    (tmp_path / "msk" / "5.png").unlink()
    with pytest.raises(SystemExit, match="no mask"):
        example["main"](["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk")])


def test_timm_and_smp_example(capsys):
    result = load("timm_and_smp.py")["main"]([])
    out = capsys.readouterr().out
    assert result["timm_max_abs_difference"] < 1e-5 and "features_only=True, in_chans=1" in out
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        pytest.skip("segmentation_models_pytorch not installed: the smp part of the example is untested here")
    assert result["smp_encoder_matches"] == 1.0, out
