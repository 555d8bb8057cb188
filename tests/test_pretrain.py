"""CodaPretrainer end to end on tiny synthetic organ folders (test_convnext, 32 px)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codafeat import CodaEncoder
from codafeat.data.io import ImageReadError
from codafeat.pretrain import CodaPretrainer

TINY = dict(
    backbone="test_convnext",
    image_size=32,
    local_size=32,
    n_local_crops=2,
    head_out_dim=64,
    head_hidden_dim=32,
    head_bottleneck_dim=16,
    batch_size=8,
    epochs=2,
    warmup_epochs=0,
    lr=1e-3,
    random_state=0,
)


def _organ_image(organ: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if organ == "chest":  # bright horizontal "ribs"
        img = 120 + 80 * (np.sin(yy / (1.5 + rng.random())) > 0)
    elif organ == "hand":  # bright disc
        cx, cy = rng.integers(12, size - 12, 2)
        img = 40 + 180 * ((xx - cx) ** 2 + (yy - cy) ** 2 < 60)
    else:  # knee: vertical bar
        img = 30 + 190 * (np.abs(xx - size // 2 + rng.integers(-4, 5)) < 5)
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_organ_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for organ, n in counts.items():
        d = root / organ
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_organ_image(organ, rng)).save(d / f"{organ}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def organ_folder(tmp_path_factory) -> Path:
    return make_organ_folder(tmp_path_factory.mktemp("organs"), {"chest": 8, "hand": 8})


@pytest.fixture(scope="module")
def fitted(organ_folder) -> CodaPretrainer:
    return CodaPretrainer(**TINY).fit(organ_folder)


def _backbone_state(enc: CodaEncoder) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in enc.model_.backbone.state_dict().items()}


def test_fit_returns_self_and_a_fitted_encoder(organ_folder, fitted):
    assert isinstance(fitted.encoder_, CodaEncoder)
    Z = fitted.encoder_.transform(organ_folder)
    assert Z.shape == (16, 64) and Z.dtype == np.float32
    assert np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    assert list(fitted.organs_) == ["chest", "hand"]
    assert fitted.n_images_ == 16


def test_history_has_every_quantity_per_epoch(fitted):
    assert len(fitted.history_) == 2
    for rec in fitted.history_:
        for key in ("loss", "loss_inter", "loss_intra", "lr", "momentum", "images_per_s", "skipped_files",
                    "inter_skipped_steps", "teacher_temp", "weight_decay"):
            assert key in rec
        assert np.isfinite(rec["loss"]) and np.isfinite(rec["loss_inter"]) and np.isfinite(rec["loss_intra"])
        assert rec["loss"] == pytest.approx(rec["loss_inter"] + rec["loss_intra"], rel=1e-4)
    # EMA momentum follows the cosine schedule from 0.996 up to 1.
    assert 0.996 <= fitted.history_[0]["momentum"] <= fitted.history_[1]["momentum"] <= 1.0
    json.dumps(fitted.history_)  # serialisable


def test_encoder_is_the_teacher_and_training_moved_it(fitted):
    teacher = fitted.teacher_.backbone.state_dict()
    enc = fitted.encoder_.model_.backbone.state_dict()
    assert all(torch.equal(teacher[k], enc[k].cpu()) for k in teacher)
    student = fitted.student_.backbone.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher if teacher[k].is_floating_point())


def test_save_and_load_by_file_gives_identical_embeddings(organ_folder, fitted, tmp_path):
    path = fitted.save(tmp_path / "coda.safetensors")
    enc = CodaEncoder(weights=path).fit()
    assert enc.config_["backbone"] == "test_convnext"
    assert enc.config_["training"]["organs"] == ["chest", "hand"]
    assert enc.config_["training"]["epochs"] == 2
    np.testing.assert_array_equal(enc.transform(organ_folder), fitted.encoder_.transform(organ_folder))


def test_same_random_state_reproduces_weights(organ_folder, fitted):
    again = CodaPretrainer(**TINY).fit(organ_folder)
    a, b = _backbone_state(fitted.encoder_), _backbone_state(again.encoder_)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = CodaPretrainer(**dict(TINY, random_state=1)).fit(organ_folder)
    c = _backbone_state(other.encoder_)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("which", ["lambda_inter", "lambda_intra"])
def test_ablation_removes_a_branch(organ_folder, which):
    est = CodaPretrainer(**dict(TINY, epochs=1, **{which: 0.0})).fit(organ_folder)
    rec = est.history_[0]
    if which == "lambda_inter":
        assert est.student_.head_org is None and est.student_.head_ins is not None
        assert np.isnan(rec["loss_inter"]) and rec["loss"] == pytest.approx(rec["loss_intra"], rel=1e-5)
    else:
        assert est.student_.head_ins is None and est.student_.head_org is not None
        assert np.isnan(rec["loss_intra"]) and rec["loss"] == pytest.approx(rec["loss_inter"], rel=1e-5)


def test_list_of_paths_with_labels_and_csv_manifest(organ_folder, tmp_path):
    paths = sorted(str(p) for p in organ_folder.rglob("*.png"))
    labels = [Path(p).parent.name for p in paths]
    a = CodaPretrainer(**dict(TINY, epochs=1)).fit(paths, labels)
    csv = tmp_path / "manifest.csv"
    csv.write_text("path,organ\n" + "".join(f"{os.path.relpath(p, tmp_path)},{o}\n" for p, o in zip(paths, labels)))
    b = CodaPretrainer(**dict(TINY, epochs=1)).fit(csv)
    sa, sb = _backbone_state(a.encoder_), _backbone_state(b.encoder_)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_arrays_with_labels(organ_folder):
    rng = np.random.default_rng(3)
    X = np.stack([_organ_image(o, rng) for o in ["chest"] * 4 + ["knee"] * 4])
    est = CodaPretrainer(**dict(TINY, epochs=1)).fit(X, ["chest"] * 4 + ["knee"] * 4)
    assert list(est.organs_) == ["chest", "knee"]


def test_single_organ_is_an_error(tmp_path):
    folder = make_organ_folder(tmp_path, {"chest": 6})
    with pytest.raises(ValueError, match="at least 2 organs"):
        CodaPretrainer(**TINY).fit(folder)


def test_organ_with_one_image_is_named(tmp_path):
    folder = make_organ_folder(tmp_path, {"chest": 6, "hand": 1})
    with pytest.raises(ValueError, match="hand"):
        CodaPretrainer(**TINY).fit(folder)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises((ValueError, FileNotFoundError)):
        CodaPretrainer(**TINY).fit(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        CodaPretrainer(**TINY).fit(tmp_path / "nope")


def test_batch_larger_than_dataset_is_a_clear_error(organ_folder):
    with pytest.raises(ValueError, match="batch_size"):
        CodaPretrainer(**dict(TINY, batch_size=64)).fit(organ_folder)


def test_labels_missing_or_misaligned(organ_folder):
    paths = sorted(str(p) for p in organ_folder.rglob("*.png"))
    with pytest.raises(ValueError, match="organ labels"):
        CodaPretrainer(**TINY).fit(paths)
    with pytest.raises(ValueError, match="one organ label per image"):
        CodaPretrainer(**TINY).fit(paths, ["chest"] * 3)


def test_both_lambdas_zero_and_bad_params_are_rejected(organ_folder):
    with pytest.raises(ValueError, match="nothing to train"):
        CodaPretrainer(**dict(TINY, lambda_inter=0.0, lambda_intra=0.0)).fit(organ_folder)
    with pytest.raises(ValueError, match="local_scale"):
        CodaPretrainer(**dict(TINY, local_scale=(0.7, 0.4))).fit(organ_folder)
    with pytest.raises(ValueError, match="batch_size"):
        CodaPretrainer(**dict(TINY, batch_size=0)).fit(organ_folder)
    with pytest.raises(ValueError, match="resume"):
        CodaPretrainer(**dict(TINY, resume=True)).fit(organ_folder)


def test_corrupt_file_raises_naming_it_or_is_skipped_and_reported(tmp_path, caplog):
    folder = make_organ_folder(tmp_path, {"chest": 8, "hand": 8})
    bad = folder / "hand" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        CodaPretrainer(**TINY).fit(folder)
    est = CodaPretrainer(**dict(TINY, epochs=1, on_error="skip")).fit(folder)
    assert est.skipped_ == [str(bad)]
    assert est.n_images_ == 16
    assert est.history_[0]["skipped_files"] == 1
    assert "broken.png" in caplog.text


def test_non_finite_loss_stops_with_clear_error_and_keeps_checkpoint(organ_folder, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    CodaPretrainer(**dict(TINY, epochs=1, checkpoint_dir=ckpt)).fit(organ_folder)
    before = (ckpt / "checkpoint.safetensors").read_bytes()

    from codafeat.losses.intra_organ import IntraOrganLoss

    real = IntraOrganLoss.forward

    def poisoned(self, *a, **k):
        return real(self, *a, **k) * float("nan")

    monkeypatch.setattr(IntraOrganLoss, "forward", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite"):
        CodaPretrainer(**dict(TINY, epochs=2, checkpoint_dir=ckpt)).fit(organ_folder)
    assert (ckpt / "checkpoint.safetensors").read_bytes() == before


def test_resume_continues_to_the_same_weights(organ_folder, tmp_path, fitted):
    ckpt = tmp_path / "ckpt"
    CodaPretrainer(**dict(TINY, epochs=1, checkpoint_dir=ckpt)).fit(organ_folder)
    # The 1-epoch run's checkpoint has other settings (epochs): resuming it is refused.
    with pytest.raises(ValueError, match="other settings"):
        CodaPretrainer(**dict(TINY, checkpoint_dir=ckpt, resume=True)).fit(organ_folder)


def test_cli_pretrain_writes_loadable_weights(organ_folder, tmp_path):
    from codafeat.cli import main

    out = tmp_path / "m.safetensors"
    hist = tmp_path / "h.json"
    rc = main([
        "pretrain", str(organ_folder), "--out", str(out), "--history", str(hist), "--backbone", "test_convnext",
        "--image-size", "32", "--local-size", "32", "--n-local-crops", "2", "--head-out-dim", "64",
        "--head-hidden-dim", "32", "--head-bottleneck-dim", "16", "--batch-size", "8", "--epochs", "1",
        "--warmup-epochs", "0", "--random-state", "0", "--verbose", "0",
    ])
    assert rc == 0
    enc = CodaEncoder(weights=out).fit()
    assert enc.transform(organ_folder).shape == (16, 64)
    assert len(json.loads(hist.read_text())) == 1


def test_organ_from_dicom_tag(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    paths = []
    for organ, tag in (("chest", "CHEST"), ("hand", "HAND")):
        for i in range(8):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            p = tmp_path / f"{organ}{i}.dcm"
            ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
            arr = _organ_image(organ, rng)
            ds.Rows, ds.Columns = arr.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.BodyPartExamined = tag
            ds.PixelData = arr.tobytes()
            ds.save_as(p, enforce_file_format=True)
            paths.append(str(p))
    est = CodaPretrainer(**dict(TINY, epochs=1, organ_from="dicom")).fit(paths)
    assert list(est.organs_) == ["chest", "hand"]


def test_fit_restores_the_denormal_setting(organ_folder):
    # fit flushes denormals on the CPU for speed, and must leave the process as it found it
    from codafeat._device import _flushing_denormals

    assert not _flushing_denormals()
    CodaPretrainer(**dict(TINY, epochs=1)).fit(organ_folder)
    assert not _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        CodaPretrainer(**dict(TINY, epochs=1)).fit(organ_folder)
        assert _flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
