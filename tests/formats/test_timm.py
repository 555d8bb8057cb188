"""codafeat weights everywhere (issue 11): timm-native files, hub folders, plain timm
checkpoints, old files, warm starts and model cards (codafeat/timm_io.py and friends)."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from codafeat import (
    CodaEncoder,
    CodaPretrainer,
    CodaSegmenter,
    build_weights_wheel,
)
from codafeat.cli import main
from codafeat.formats.timm import load_any
from codafeat.formats.weights import (
    FORMAT_VERSION,
    WeightsError,
    load_weights,
    make_config,
    read_config,
)

from helpers import TINY_PRETRAIN as TINY
from helpers import make_organ_folder

NAME = "test_convnext"


@pytest.fixture(scope="module")
def encoder():
    return CodaEncoder(backbone=NAME, image_size=32, random_state=0).fit()


@pytest.fixture()
def wfile(encoder, tmp_path):
    return encoder.save(tmp_path / "coda.safetensors")


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40), dtype=np.uint8)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- a weights file is a timm checkpoint
def test_plain_timm_loads_a_codafeat_file_bit_exact(encoder, wfile):
    ours = encoder.model_.backbone.state_dict()
    with open(wfile, "rb") as fh:
        assert b"backbone." not in fh.read(4096), "tensors must carry timm's own names"
    m1 = timm.create_model(NAME, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(wfile)))
    assert _same(m1.state_dict(), ours)
    m2 = timm.create_model(NAME, checkpoint_path=str(wfile), num_classes=0)
    assert _same(m2.state_dict(), ours)
    feats = timm.create_model(NAME, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(wfile)))
    assert torch.equal(feats.stem_0.weight, ours["stem.0.weight"])
    one = timm.create_model(
        NAME, pretrained=True, num_classes=0, in_chans=1, pretrained_cfg_overlay=dict(file=str(wfile))
    )
    torch.testing.assert_close(one.stem[0].weight, ours["stem.0.weight"].sum(1, keepdim=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m1.eval()(x), encoder.model_.backbone(x))
    assert read_config(wfile)["format_version"] == FORMAT_VERSION == 2


def test_format_1_files_still_load(encoder, tmp_path):
    cfg = dict(encoder.config_, format_version=1)
    tensors = {"backbone." + k: v.contiguous() for k, v in encoder.model_.backbone.state_dict().items()}
    tensors["head.extra"] = torch.zeros(3)  # format 1 allowed other prefixes, ignored
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"codafeat_config": json.dumps(cfg)})
    state, config = load_weights(old)
    assert config["format_version"] == 1 and _same(state, encoder.model_.backbone.state_dict())
    np.testing.assert_array_equal(
        CodaEncoder(weights=str(old)).fit().transform(_images()), encoder.transform(_images())
    )


# --------------------------------------------------------------------------- hub layout
def test_export_round_trips_through_timm_and_codafeat(encoder, wfile, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["export", str(wfile), "--format", "timm", "--out", str(out), "--license", "cc-by-4.0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    hf = json.loads((out / "config.json").read_text())
    assert hf["architecture"] == NAME and hf["num_classes"] == 0 and hf["num_features"] == 64
    assert hf["pretrained_cfg"]["input_size"] == [3, 32, 32] and hf["pretrained_cfg"]["license"] == "cc-by-4.0"
    assert hf["codafeat"]["backbone"] == NAME
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 0 and _same(model.state_dict(), encoder.model_.backbone.state_dict())
    assert list(model.pretrained_cfg["mean"]) == encoder.config_["mean"]
    X = _images()
    np.testing.assert_array_equal(CodaEncoder(weights=str(out)).fit().transform(X), encoder.transform(X))
    assert read_config(out / "model.safetensors")["license"] == "cc-by-4.0"
    masks = np.zeros((4, 40, 40), np.uint8)
    masks[:, 10:30, 10:30] = 1
    seg = CodaSegmenter(weights=str(out), epochs=1, validation_fraction=0, freeze_encoder=True, random_state=0)
    seg.fit(_images(4), masks)
    assert torch.equal(seg.model_.encoder.stem_0.weight, encoder.model_.backbone.state_dict()["stem.0.weight"])


def test_plain_timm_checkpoints_and_folders(tmp_path):
    torch.manual_seed(1)
    net = timm.create_model(NAME)  # with its 1000-way classifier, as ImageNet weights are
    path = tmp_path / "in1k.safetensors"
    save_file(net.state_dict(), str(path))
    with pytest.raises(WeightsError, match="plain timm checkpoint.*backbone="):
        CodaEncoder(weights=str(path)).fit()
    enc = CodaEncoder(weights=str(path), backbone=NAME).fit()
    body = {k: v for k, v in net.state_dict().items() if not k.startswith("head.fc.")}
    assert _same(enc.model_.backbone.state_dict(), body)
    assert enc.config_["mean"] == [0.5, 0.5, 0.5] and enc.config_["image_size"] == 160  # timm's cfg of the model
    with pytest.raises(ValueError, match="in1k.safetensors: tensors do not match"):  # a plain file names no model
        CodaEncoder(weights=str(path), backbone="convnext_atto").fit()
    # a folder in timm's layout without codafeat's config (timm's own export)
    folder = tmp_path / "timm_dir"
    folder.mkdir()
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": NAME,
                "num_classes": 1000,
                "num_features": 64,
                "pretrained_cfg": {"input_size": [3, 96, 96]},
            }
        )
    )
    state, config, _ = load_any(str(folder))
    assert config["backbone"] == NAME and config["image_size"] == 96 and _same(state, body)


def test_pickles_and_unknown_files_are_refused(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(pickle.dumps({"stem.0.weight": [1, 2]}))
    with pytest.raises(WeightsError, match="not a safetensors file.*never pickles"):
        CodaEncoder(weights=str(bad), backbone=NAME).fit()
    (tmp_path / "half").mkdir()
    with pytest.raises(WeightsError, match="model.safetensors and config.json"):
        CodaEncoder(weights=str(tmp_path / "half")).fit()


# --------------------------------------------------------------------------- warm start
def test_warm_start_begins_at_the_source_weights(wfile, encoder, tmp_path, monkeypatch):
    from codafeat._train.loop import CodaTrainer

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    seen = {}
    real = CodaTrainer.run_epoch

    def spy(self, loader, epoch, **kw):
        if epoch == 0:
            seen["student"] = {k: v.clone() for k, v in self.student_module.backbone.state_dict().items()}
            seen["teacher"] = {k: v.clone() for k, v in self.teacher.backbone.state_dict().items()}
        return real(self, loader, epoch, **kw)

    monkeypatch.setattr(CodaTrainer, "run_epoch", spy)
    pre = CodaPretrainer(**dict(TINY, epochs=1, monitor_every=0), init_weights=str(wfile)).fit(folder)
    source = encoder.model_.backbone.state_dict()
    assert _same(seen["student"], source) and _same(seen["teacher"], source)
    assert pre.init_weights_source_ == str(wfile)
    assert pre.encoder_.config_["training"]["init_weights"] == str(wfile)
    cold = CodaPretrainer(**dict(TINY, epochs=1, monitor_every=0)).fit(folder)
    assert cold.encoder_.config_["training"]["init_weights"] == "random"
    with pytest.raises(ValueError, match="contradicts"):
        CodaPretrainer(**dict(TINY, epochs=1, backbone="convnext_atto"), init_weights=str(wfile)).fit(folder)


# --------------------------------------------------------------------------- model card and licence
def test_model_card_data_summary_licence_and_wheel(tmp_path, capsys):
    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 6})
    pre = CodaPretrainer(**dict(TINY, epochs=1, monitor_every=0)).fit(folder)
    config = pre.encoder_.config_
    assert config["data"]["organs"] == {"chest": 8, "hand": 6} and config["data"]["n_images"] == 14
    assert len(config["data"]["files_sha256"]) == 64 and config["license"] == "unknown"
    again = make_organ_folder(tmp_path / "elsewhere", {"chest": 8, "hand": 6})
    assert (
        CodaPretrainer(**dict(TINY, epochs=1, monitor_every=0)).fit(again).data_summary_["files_sha256"]
        == config["data"]["files_sha256"]
    ), "the same tree elsewhere gives the same digest"
    w = pre.save(tmp_path / "w.safetensors")
    wheel = build_weights_wheel(w, name="cardtest", version="1.0", out_dir=tmp_path, license="cc-by-nc-4.0")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("codafeat_weights_cardtest-1.0.dist-info/METADATA").decode()
        readme = zf.read("codafeat_weights_cardtest/README.md").decode()
        packaged = zf.read("codafeat_weights_cardtest/weights.safetensors")
    assert "License: cc-by-nc-4.0\n" in meta and "## Intended use" in meta
    assert "chest 8, hand 6" in readme and "| licence | cc-by-nc-4.0 |" in readme
    assert b"cc-by-nc-4.0" in packaged[:20000] and read_config(w)["license"] == "unknown", "source file untouched"
    assert main(["info", str(w)]) == 0
    card = capsys.readouterr().out
    assert card.startswith("# codafeat test_convnext") and "14 images of 2 organ(s)" in card


def test_config_card_fields_are_validated():
    cfg = make_config(backbone=NAME, embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3, license="mit")
    from codafeat.formats.weights import Weights

    w = Weights.from_state({"a": torch.zeros(1)}, cfg)
    assert w.config["license"] == "mit" and "Not a medical device" in w.config["intended_use"]
    with pytest.raises(WeightsError, match="'license' must be a string"):
        Weights.from_state({"a": torch.zeros(1)}, dict(cfg, license=3))


def _hub_folder(tmp_path, config) -> str:
    folder = tmp_path / "hub"
    folder.mkdir(exist_ok=True)
    save_file(timm.create_model("test_convnext", num_classes=0).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"architecture": "hf-hub:timm/convnext_tiny.fb_in1k"}, "never downloads"),
        ({"architecture": "local-dir:/elsewhere"}, "never downloads"),
        ({"architecture": "timm/convnext_tiny"}, "never downloads"),
        ({"architecture": 12}, "must be a timm model name"),
        ({"architecture": "not_a_model_anywhere"}, "not a timm model name"),
        ({"architecture": "test_convnext", "pretrained_cfg": {"input_size": [3, 100000, 100000]}}, "image_size"),
        ({"architecture": "test_convnext", "pretrained_cfg": {"mean": [float("nan")] * 3}}, "finite"),
        ({"architecture": "test_convnext", "pretrained_cfg": {"input_size": "big"}}, "malformed"),
        ({"architecture": "test_convnext", "pretrained_cfg": [1, 2]}, "JSON object"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply|not a timm config"),
    ],
    ids=[
        "hf-hub",
        "local-dir",
        "hub-id",
        "not-a-string",
        "unknown",
        "huge-input",
        "nan-mean",
        "bad-size",
        "bad-pretrained-cfg",
        "deep-json",
    ],
)
def test_hub_folder_configs_get_the_checks_of_codafeat_configs(tmp_path, config, message, caplog):
    import time

    folder = _hub_folder(tmp_path, config)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match=message) as info:
        CodaEncoder(weights=folder).fit()
    assert time.perf_counter() - t0 < 10, "nothing may reach the network (hub lookups retry for ~25 s)"
    assert "config.json" in str(info.value)
    assert main(["info", folder]) == 1 and "config.json" in caplog.text  # one ERROR line, no traceback


def test_a_plain_checkpoint_needs_a_plain_timm_backbone_name(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(timm.create_model("test_convnext", num_classes=0).state_dict(), str(path))
    with pytest.raises(WeightsError, match="never downloads"):
        load_any(path, backbone="hf-hub:timm/test_convnext")
    assert load_any(path, backbone="test_convnext")[1]["backbone"] == "test_convnext"


def test_info_shows_a_card_whose_data_and_training_have_unexpected_types(tmp_path, capsys):
    from codafeat.formats.weights import save_weights

    net = timm.create_model("test_convnext", num_classes=0)
    cfg = make_config(
        backbone="test_convnext",
        embed_dim=64,
        image_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        data={"organs": {"chest": "ten", "hand": None}},
        training={"epochs": "many", "final_loss": [1]},
    )
    path = save_weights(tmp_path / "odd.safetensors", net.state_dict(), cfg)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cannot read" in out and '"ten"' in out and "many" in out
