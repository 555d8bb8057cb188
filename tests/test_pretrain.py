"""CodaPretrainer end to end on tiny synthetic organ folders (test_convnext, 32 px)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as st_save

from codafeat import CodaEncoder
from codafeat._train.build import views_of
from codafeat.data.io import ImageReadError
from codafeat.pretrain import CodaPretrainer

from helpers import TINY_PRETRAIN as TINY
from helpers import interrupt_at, make_organ_folder, organ_image, tiny_pretrain_cli


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
    np.testing.assert_array_equal(
        Z, CodaEncoder(weights=fitted.encoder_.get_weights(), device="cpu").fit().transform(organ_folder)
    )
    assert list(fitted.organs_) == ["chest", "hand"]
    assert fitted.n_images_ == 16


def test_history_has_every_quantity_per_epoch(fitted):
    assert len(fitted.history_) == 2
    for rec in fitted.history_:
        for key in (
            "loss",
            "loss_inter",
            "loss_intra",
            "lr",
            "momentum",
            "images_per_s",
            "skipped_files",
            "inter_skipped_steps",
            "teacher_temp",
            "weight_decay",
        ):
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
    X = np.stack([organ_image(o, rng) for o in ["chest"] * 4 + ["knee"] * 4])
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
    with pytest.raises(ValueError, match="koleo_weight=0.1 acts on the intra-organ head"):
        CodaPretrainer(**dict(TINY, lambda_intra=0.0, koleo_weight=0.1)).fit(organ_folder)
    with pytest.raises(ValueError, match="koleo_weight"):
        CodaPretrainer(**dict(TINY, koleo_weight=-1.0)).fit(organ_folder)
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
    rc = main(tiny_pretrain_cli(organ_folder, out, "--history", str(hist), "--random-state", "0"))
    assert rc == 0
    enc = CodaEncoder(weights=out).fit()
    assert enc.transform(organ_folder).shape == (16, 64)
    assert len(json.loads(hist.read_text())) == 1


def test_organ_from_dicom_tag(tmp_path):
    pytest.importorskip("pydicom")
    from codafeat.formats.model_card import model_card
    from codafeat.formats.weights import read_config

    from helpers import write_dicom

    rng = np.random.default_rng(0)
    paths = []
    spellings = {"chest": ["CHEST", "PORT CHEST", "THORAX", "CHEST_LAT"], "hand": ["HAND", "HAND LT", "R HAND", ""]}
    for organ, tags in spellings.items():
        for i in range(8):
            extra = {"SeriesDescription": "Hand PA"} if tags[i % 4] == "" else {}
            paths.append(
                str(
                    write_dicom(
                        tmp_path / f"{organ}{i}.dcm", organ_image(organ, rng), BodyPartExamined=tags[i % 4], **extra
                    )
                )
            )
    est = CodaPretrainer(**dict(TINY, epochs=1, organ_from="dicom")).fit(paths)
    assert list(est.organs_) == ["chest", "hand"] and est.data_summary_["organs"] == {"chest": 8, "hand": 8}
    table = {row["raw"]: (row["organ"], row["source"], row["count"]) for row in est.data_summary_["dicom_organ_map"]}
    assert table["PORT CHEST"] == ("chest", "tag", 2) and table[""] == ("hand", "description", 2)
    card = model_card(read_config(est.save(tmp_path / "w.safetensors")))
    assert "'PORT CHEST' -> chest (tag, 2)" in card and "'' -> hand (description, 2)" in card


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


# ---------------------------------------------------------------------- resume (issue 10, item 3)
def test_resume_without_random_state_reuses_the_stored_seed(tmp_path, monkeypatch):
    from codafeat._train.checkpoint import load_checkpoint

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=3)
    ckpt = tmp_path / "ckpt"
    params = dict(TINY, epochs=3, random_state=None, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    _, meta = load_checkpoint(ckpt / "checkpoint.safetensors")
    assert meta["epochs_done"] == 1
    assert {"seed", "n_images", "steps_per_epoch", "data_key"} <= set(meta)
    assert meta["n_images"] == 16 and meta["steps_per_epoch"] == 2
    resumed = CodaPretrainer(**dict(params, resume=True)).fit(folder)
    assert resumed.seed_ == meta["seed"]
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    # A fresh run without random_state draws another seed (so reusing the stored one mattered).
    fresh = {CodaPretrainer(**dict(TINY, epochs=1, random_state=None)).fit(folder).seed_ for _ in range(2)}
    assert meta["seed"] not in fresh or len(fresh) == 2


def test_resume_refuses_other_data_seed_or_augmentation(tmp_path, monkeypatch):
    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=4)
    ckpt = tmp_path / "ckpt"
    params = dict(TINY, epochs=3, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    for change in (
        dict(global_scale=(0.5, 1.0)),
        dict(local_scale=(0.3, 0.6)),
        dict(rotation=5.0),
        dict(hflip=True),
        dict(symmetric=False),
        dict(drop_path_rate=0.0),
        dict(jitter_prob=0.0),
        dict(brightness=0.2),
        dict(blur_prob=0.5),
        dict(blur_sigma=(0.1, 1.0)),
        dict(gamma=(1.0, 1.0)),
    ):
        with pytest.raises(ValueError, match="other settings"):
            CodaPretrainer(**dict(params, resume=True, **change)).fit(folder)
    with pytest.raises(ValueError, match="another seed"):
        CodaPretrainer(**dict(params, resume=True, random_state=1)).fit(folder)
    # An image added to the folder changes the image set: an error, not a silent shift.
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(folder / "hand" / "hand_extra.png")
    with pytest.raises(ValueError, match="other data"):
        CodaPretrainer(**dict(params, resume=True)).fit(folder)


def test_resume_refuses_swapped_pixels(tmp_path, monkeypatch):
    """Issue 19, item 6: the same paths with other pixels are another image set."""
    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=6)
    params = dict(TINY, epochs=2, checkpoint_dir=tmp_path / "ckpt")
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    chest, hand = folder / "chest" / "chest_000.png", folder / "hand" / "hand_000.png"
    a, b = chest.read_bytes(), hand.read_bytes()
    chest.write_bytes(b)
    hand.write_bytes(a)
    with pytest.raises(ValueError, match="other data"):
        CodaPretrainer(**dict(params, resume=True)).fit(folder)


def test_view_settings_reach_the_views_and_bad_ones_are_named_before_any_data(tmp_path):
    pre = CodaPretrainer(
        **dict(
            TINY, brightness=0.1, contrast=0.2, gamma=(1.0, 1.0), jitter_prob=0.0, blur_prob=0.25, blur_sigma=(0.5, 1.0)
        )
    )
    views = views_of(pre)
    assert (views.brightness, views.contrast, views.gamma, views.jitter_prob) == (0.1, 0.2, (1.0, 1.0), 0.0)
    assert views.blur_prob == (0.25, 0.25, 0.25) and views.blur_sigma == (0.5, 1.0)
    for change, name in (
        (dict(gamma=(0.0, 1.2)), "gamma"),
        (dict(blur_prob=(1.0, 0.1)), "blur_prob"),
        (dict(blur_sigma=(-1.0, 2.0)), "blur_sigma"),
        (dict(jitter_prob=1.5), "jitter_prob"),
    ):
        with pytest.raises(ValueError, match=name):
            CodaPretrainer(**dict(TINY, **change)).fit(tmp_path / "does-not-exist")


def test_a_checkpoint_from_before_the_view_settings_resumes_at_their_defaults(tmp_path, monkeypatch):
    """Checkpoints written before a setting existed ran at its default: they still resume."""
    from codafeat._train import checkpoint as ck

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=5)
    ckpt = tmp_path / "ckpt"
    params = dict(TINY, epochs=2, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    path, tensors, meta = ck.latest_checkpoint(ckpt)
    for key in ("brightness", "contrast", "gamma", "jitter_prob", "blur_prob", "blur_sigma"):
        meta["params"].pop(key)  # as an older codafeat wrote it
    (ckpt / "checkpoint.prev.safetensors").unlink(missing_ok=True)
    path.write_bytes(st_save(tensors, metadata={ck._META_KEY: json.dumps(meta)}))
    with pytest.raises(ValueError, match="jitter_prob=0.8 \\(checkpoint\\) vs 0.5"):  # the defaults stand in
        CodaPretrainer(**dict(params, resume=True, jitter_prob=0.5)).fit(folder)
    resumed = CodaPretrainer(**dict(params, resume=True)).fit(folder)
    assert len(resumed.history_) == 2


def test_drop_path_is_the_students_only():
    pre = CodaPretrainer(**dict(TINY, epochs=1, drop_path_rate=0.2))
    assert pre.get_params()["drop_path_rate"] == 0.2
    from codafeat.nn.coda_model import CodaNetwork

    net = CodaNetwork(
        "test_convnext",
        mean=(0.5,) * 3,
        std=(0.2,) * 3,
        head_out_dim=8,
        head_hidden_dim=8,
        head_bottleneck_dim=4,
        drop_path_rate=0.2,
    )
    rates = [m.drop_prob for m in net.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) > 0
    with pytest.raises(ValueError, match="drop_path_rate"):
        CodaPretrainer(**dict(TINY, drop_path_rate=1.5)).fit("unused")


# ---------------------------------------------------------------------- monitor (issue 10, item 4)
MONITOR_KEYS = {
    "monitor_knn_accuracy",
    "monitor_nmi",
    "embed_std",
    "teacher_entropy",
    "teacher_mi",
    "ln_k",
    "center_norm",
}


def test_monitor_records_figures_on_held_out_images(tmp_path, monkeypatch):
    import json

    from codafeat._train.loop import CodaTrainer

    folder = make_organ_folder(tmp_path / "data", {"chest": 20, "hand": 20, "knee": 20}, seed=6)
    seen: list[int] = []
    real = CodaTrainer.step

    def step(self, batch, epoch, it):
        seen.extend(batch["index"].tolist())
        return real(self, batch, epoch, it)

    monkeypatch.setattr(CodaTrainer, "step", step)
    ckpt = tmp_path / "ckpt"
    pre = CodaPretrainer(**dict(TINY, epochs=2, monitor_fraction=0.1, checkpoint_dir=ckpt)).fit(folder)
    assert len(pre.monitor_indices_) == 6  # 2 per organ
    assert pre.n_train_images_ == 54
    assert not set(seen) & set(pre.monitor_indices_.tolist()), "monitor images were trained on"
    for h in pre.history_:
        assert MONITOR_KEYS <= set(h)
        assert 0 <= h["monitor_knn_accuracy"] <= 1 and 0 < h["teacher_entropy"] <= h["ln_k"] + 1e-6
        assert h["ln_k"] == pytest.approx(np.log(TINY["head_out_dim"]))
    lines = (ckpt / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert MONITOR_KEYS <= set(json.loads(lines[-1]))


def test_monitor_every_and_off_when_too_few_images(tmp_path, caplog):
    folder = make_organ_folder(tmp_path / "data", {"chest": 20, "hand": 20}, seed=7)
    pre = CodaPretrainer(**dict(TINY, epochs=3, monitor_fraction=0.1, monitor_every=2)).fit(folder)
    assert [MONITOR_KEYS <= set(h) for h in pre.history_] == [False, True, True]  # epoch 2 and the last
    with caplog.at_level("INFO", logger="codafeat"):
        pre = CodaPretrainer(**dict(TINY, epochs=1, monitor_fraction=0.05)).fit(folder)
    assert len(pre.monitor_indices_) == 0 and pre.n_train_images_ == 40
    assert "training monitor off" in caplog.text and "per organ" in caplog.text
    pre = CodaPretrainer(**dict(TINY, epochs=1, monitor_fraction=0.1, monitor_every=0)).fit(folder)
    assert not any(MONITOR_KEYS & set(h) for h in pre.history_)


def test_progress_bar_routes_logging_through_tqdm(tmp_path, monkeypatch):
    """Log lines during training go through tqdm's logging redirection, so they do not break the bar."""
    import contextlib

    import tqdm.contrib.logging as tqdm_logging

    used = []

    @contextlib.contextmanager
    def recording(*args, **kwargs):
        used.append(kwargs.get("loggers"))
        yield

    monkeypatch.setattr(tqdm_logging, "logging_redirect_tqdm", recording)
    folder = make_organ_folder(tmp_path / "data", {"chest": 20, "hand": 20}, seed=8)
    CodaPretrainer(**dict(TINY, epochs=1, monitor_fraction=0.1, verbose=1)).fit(folder)
    assert used and [lg.name for lg in used[0]] == ["codafeat"]
    used.clear()
    CodaPretrainer(**dict(TINY, epochs=1, verbose=0)).fit(folder)
    assert not used  # no bar, no redirection


def test_metrics_go_to_tensorboard_when_it_is_installed(tmp_path, monkeypatch):
    import sys
    import types

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    folder = make_organ_folder(tmp_path / "data", {"chest": 20, "hand": 20}, seed=9)
    CodaPretrainer(**dict(TINY, epochs=2, monitor_fraction=0.1, log_dir=tmp_path / "logs")).fit(folder)
    tags = {t for t, _, _ in scalars}
    assert {"coda/loss_intra", "coda/monitor_knn_accuracy", "coda/teacher_entropy"} <= tags
    assert sorted({s for _, _, s in scalars}) == [1, 2]
    assert (tmp_path / "logs" / "metrics.jsonl").is_file()


ORGANS7 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "organs7"


@pytest.mark.data
@pytest.mark.skipif(not ORGANS7.is_dir(), reason="needs ../shared/data/organs7")
def test_monitor_on_seven_real_organs():
    """The monitor's own check on real data: 7 organs of organs7, a tiny backbone, 2 epochs."""
    from codafeat.data.manifest import scan_organ_folder

    paths, organs = scan_organ_folder(ORGANS7)
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(organs == o), 20, replace=False) for o in np.unique(organs)])
    pre = CodaPretrainer(**dict(TINY, epochs=2, batch_size=16, monitor_fraction=0.15)).fit(
        [paths[i] for i in keep], organs[keep]
    )
    assert len(pre.organs_) == 7 and len(pre.monitor_indices_) == 21
    last = pre.history_[-1]
    assert MONITOR_KEYS <= set(last)
    assert last["monitor_knn_accuracy"] > 1 / 7  # above chance already
