"""Hardening (issue 14): no input may crash the process, no failure may throw away finished work.

Every case builds its bad file or situation here. Cases that run code which once crashed
the interpreter (a segfault in a C decoder) run in a child process, so a regression
fails the test instead of killing the test run.
"""

from __future__ import annotations

import io as _io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from codafeat import CodaEncoder
from codafeat.data import io
from codafeat.data.io import (
    ImageReadError,
    decode_image,
    find_images,
    load_image,
    set_max_image_pixels,
)
from codafeat.data.manifest import scan_organ_folder
from codafeat.pretrain import CodaPretrainer

from helpers import TINY_PRETRAIN as TINY
from helpers import interrupt_at as _interrupt_at
from helpers import make_organ_folder, tiny_pretrain_cli

REPO = Path(__file__).resolve().parents[2]
ENC = dict(backbone="test_convnext", image_size=32, batch_size=4, random_state=0)


def _child(code: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def random_grey_png(path: Path, size: int = 512, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def _chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        n = struct.unpack(">I", data[pos : pos + 4])[0]
        yield pos, n, data[pos + 4 : pos + 8]
        pos += 12 + n


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


# --------------------------------------------------------------------------- 1. corrupt grey PNG
@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
@pytest.mark.parametrize("fix_crc", [False, True], ids=["flipped-byte", "flipped-byte-valid-crc"])
@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_grey_png_is_an_error_not_a_crash(tmp_path, fix_crc, workers):
    bad = random_grey_png(tmp_path / "bad.png")
    data = bytearray(bad.read_bytes())
    data[30041] ^= 0xFF
    if fix_crc:  # a corrupt zlib stream behind a valid CRC (libpng aborted on this too)
        for pos, n, _ in _chunks(bytes(data)):
            if pos <= 30041 < pos + 12 + n:
                data[pos + 8 + n : pos + 12 + n] = struct.pack(
                    ">I", zlib.crc32(bytes(data[pos + 4 : pos + 8 + n])) & 0xFFFFFFFF
                )
    bad.write_bytes(bytes(data))
    good = random_grey_png(tmp_path / "good.png", seed=1)
    code = f"""
import numpy as np
from codafeat import CodaEncoder, ImageReadError
paths = [{str(good)!r}] * 5 + [{str(bad)!r}]
enc = CodaEncoder(backbone="test_convnext", image_size=32, batch_size=2, num_workers={workers}, on_error="skip").fit()
E, skipped, *_ = enc.embed(paths)
print("SKIPPED", skipped, int(np.isnan(E).any(axis=1).sum()))
try:
    CodaEncoder(backbone="test_convnext", image_size=32, batch_size=2, num_workers={workers}).fit().transform(paths)
except ImageReadError as exc:
    print("RAISED", exc.path)
"""
    r = _child(code)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert f"SKIPPED [{str(bad)!r}] 1" in r.stdout
    assert f"RAISED {bad}" in r.stdout


def _flip(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 0xFF
    return bytes(out)


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(3)
    files = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg")):
        buf = _io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(buf, fmt)
        files[suffix] = buf.getvalue()
    pytest.importorskip("pydicom")
    from helpers import write_dicom

    p = write_dicom(
        tmp / "s.dcm",
        rng.integers(0, 4000, (24, 20)).astype(np.uint16),
        bits_stored=12,
        WindowCenter=2000,
        WindowWidth=3000,
    )
    files[".dcm"] = p.read_bytes()
    return files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".png", ".jpg", ".dcm"]), flips=st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_random_byte_flips_decode_or_raise_image_read_error(tmp_path, sample_files, suffix, flips):
    p = tmp_path / f"flipped{suffix}"
    p.write_bytes(_flip(sample_files[suffix], flips))
    try:
        img = load_image(p, size=16)
    except ImageReadError as exc:
        assert exc.path == str(p)
    else:
        assert img.shape == (16, 16) and np.isfinite(img).all()


# --------------------------------------------------------------------------- 2. decompression bombs
def _bomb_png(path: Path, side: int = 20000) -> Path:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1) * 64, 9)  # a few rows; the header declares the rest
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [20000, 10000])
def test_grey_png_bomb_is_refused_before_decoding(tmp_path, side):
    """20000^2 = 400 MP (Pillow's own limit refuses it too); 10000^2 = 100 MP is under Pillow's
    refusal threshold (179 MP) and only codafeat's limit (67 MP) stops it."""
    bomb = _bomb_png(tmp_path / "bomb.png", side)
    assert bomb.stat().st_size < 500_000
    with pytest.raises(ImageReadError, match="over the limit|exceeds limit") as err:
        decode_image(bomb)
    assert err.value.path == str(bomb)


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_pixel_limit_is_one_configurable_rule(tmp_path):
    small = random_grey_png(tmp_path / "s.png", size=20)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(rgb)
    old = set_max_image_pixels(399)
    try:
        for p in (small, rgb):
            with pytest.raises(ImageReadError, match="400 pixels, over the limit of 399"):
                decode_image(p)
        pytest.importorskip("pydicom")
        from helpers import write_dicom

        dcm = write_dicom(tmp_path / "d.dcm", np.zeros((20, 20), np.uint16))
        with pytest.raises(ImageReadError, match="over the limit"):
            decode_image(dcm)
    finally:
        set_max_image_pixels(old)
    assert decode_image(small).shape == (20, 20)
    with pytest.raises(ValueError, match="positive integer"):
        set_max_image_pixels(0)
    r = _child(
        f"from codafeat.data.io import decode_image, MAX_IMAGE_PIXELS\nprint(MAX_IMAGE_PIXELS)\n"
        f"try:\n    decode_image({str(small)!r})\nexcept Exception as e:\n    print('refused', type(e).__name__)"
    )
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from codafeat.data.io import decode_image\ntry:\n    decode_image({str(small)!r})\n"
            "except Exception as e:\n    print('refused', type(e).__name__)",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, CODAFEAT_MAX_IMAGE_PIXELS="100", PYTHONPATH=str(REPO)),
    )
    assert "refused ImageReadError" in r2.stdout and "refused" not in r.stdout


# --------------------------------------------------------------------------- 3. joblib workers
@pytest.mark.parametrize("num_workers", ["auto", 2])
def test_cross_val_score_with_two_jobs_on_files(tmp_path, num_workers):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    paths = [str(random_grey_png(tmp_path / f"{i}.png", size=256, seed=i)) for i in range(24)]
    y = np.arange(24) % 2
    pipe = make_pipeline(CodaEncoder(**dict(ENC, num_workers=num_workers)), LogisticRegression())
    scores = cross_val_score(pipe, np.array(paths), y, cv=2, n_jobs=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()


# --------------------------------------------------------------------------- 4. work lost at the end
def test_cli_pretrain_checks_out_before_training(tmp_path, monkeypatch, caplog):
    from codafeat.cli import main

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    (tmp_path / "afile").write_text("x")
    calls = []
    monkeypatch.setattr(CodaPretrainer, "fit", lambda self, *a, **k: calls.append(1) or self)
    rc = main(["pretrain", str(folder), "--out", str(tmp_path / "afile" / "m.safetensors"), "--epochs", "1"])
    assert rc == 1 and not calls
    assert "--out" in caplog.text and "afile" in caplog.text


def test_cli_pretrain_rescues_the_model_when_the_final_save_fails(tmp_path, monkeypatch, caplog):
    from codafeat.cli import main

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    out = tmp_path / "out" / "m.safetensors"
    ckpt = tmp_path / "ckpt"
    real = CodaPretrainer.save

    def save(self, path):
        if Path(path) == out:
            raise OSError(28, "No space left on device")
        return real(self, path)

    monkeypatch.setattr(CodaPretrainer, "save", save)
    rc = main(tiny_pretrain_cli(folder, out, "--checkpoint-dir", str(ckpt)))
    assert rc == 1
    rescued = list(ckpt.glob("m.rescued-*.safetensors"))
    assert len(rescued) == 1 and "saved to" in caplog.text and str(rescued[0]) in caplog.text
    CodaEncoder(weights=str(rescued[0])).fit()  # a loadable model


def test_embed_writes_non_utf8_names_losslessly_and_atomically(tmp_path, monkeypatch):
    from codafeat.cli import main

    raw = os.fsencode(str(tmp_path)) + b"/r\xe9sum\xe9-\xff.png"  # Latin-1 bytes: not UTF-8
    random_grey_png(Path(os.fsdecode(raw)), size=40)
    enc = CodaEncoder(**ENC).fit()
    w = tmp_path / "w.safetensors"
    enc.save(w)
    for suffix in (".npy", ".csv"):
        out = tmp_path / f"e{suffix}"
        assert main(["embed", os.fsdecode(raw), "--weights", str(w), "--out", str(out), "--verbose", "0"]) == 0
        if suffix == ".npy":
            assert (tmp_path / "e.paths.txt").read_bytes() == raw + b"\n"
        else:
            assert raw in out.read_bytes()
    # a set: a failure while writing the path list leaves neither file behind
    monkeypatch.setattr("codafeat._fileio.os.fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "disk full")))
    out = tmp_path / "f.npy"
    assert main(["embed", os.fsdecode(raw), "--weights", str(w), "--out", str(out), "--verbose", "0"]) == 1
    assert not out.exists() and not (tmp_path / "f.paths.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cache_that_cannot_store_warns_once_and_returns_embeddings(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "afile" / "cache"  # under a regular file: every write fails, even as root
    paths = [str(random_grey_png(tmp_path / f"{i}.png", size=40, seed=i)) for i in range(3)]
    enc = CodaEncoder(**dict(ENC, cache=str(cache))).fit()
    ref = CodaEncoder(**ENC).fit().transform(paths)
    with caplog.at_level("WARNING"):
        a = enc.transform(paths)
        b = enc.transform(paths)
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, ref, rtol=1e-5, atol=1e-6)
    assert caplog.text.count("cannot store entries") == 1


# --------------------------------------------------------------------------- 5. symlinked organs
def test_symlinked_organ_folders_are_followed_loop_safe(tmp_path):
    elsewhere = make_organ_folder(tmp_path / "elsewhere", {"chest": 3})
    data = make_organ_folder(tmp_path / "data", {"hand": 2})
    (data / "chest").symlink_to(elsewhere / "chest", target_is_directory=True)
    (data / "hand" / "loop").symlink_to(data / "hand", target_is_directory=True)  # a cycle
    (data / "hand" / "again").symlink_to(elsewhere / "chest", target_is_directory=True)  # read already
    paths, labels = scan_organ_folder(data)
    assert sorted(labels.tolist()) == ["chest"] * 3 + ["hand"] * 2
    assert len(set(os.path.realpath(p) for p in paths)) == len(paths) == 5
    assert len(find_images(data)) == 5


# --------------------------------------------------------------------------- 6-7. DICOM
def _dicom(path: Path, arr: np.ndarray, **tags) -> Path:
    pytest.importorskip("pydicom")
    from helpers import write_dicom

    return write_dicom(path, arr, **tags)


def test_organ_from_dicom_skips_unreadable_tags(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for organ in ("CHEST", "HAND"):
        for i in range(8):
            paths.append(
                str(
                    _dicom(
                        tmp_path / f"{organ}{i}.dcm",
                        rng.integers(0, 255, (40, 40)).astype(np.uint8),
                        BodyPartExamined=organ,
                    )
                )
            )
    (tmp_path / "empty.dcm").write_bytes(b"")
    untagged = _dicom(tmp_path / "untagged.dcm", np.zeros((40, 40), np.uint8))
    bad = [str(tmp_path / "empty.dcm"), str(untagged)]
    with pytest.raises(ImageReadError) as err:
        CodaPretrainer(**dict(TINY, epochs=1, organ_from="dicom")).fit(paths + bad)
    assert err.value.path in bad
    est = CodaPretrainer(**dict(TINY, epochs=1, organ_from="dicom", on_error="skip")).fit(paths + bad)
    assert sorted(est.skipped_) == sorted(bad) and est.n_images_ == 16


def test_presentation_lut_inverse_flips_polarity_once(tmp_path):
    a = np.random.default_rng(1).integers(0, 4000, (10, 12)).astype(np.uint16)
    kw = dict(bits_stored=12, WindowCenter=2000, WindowWidth=4000)
    plain = load_image(_dicom(tmp_path / "m2.dcm", a, **kw))
    inverse = load_image(_dicom(tmp_path / "m2i.dcm", a, PresentationLUTShape="INVERSE", **kw))
    np.testing.assert_allclose(inverse, 1.0 - plain, atol=1e-6)
    mono1 = load_image(_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", **kw))
    mono1_inv = load_image(
        _dicom(tmp_path / "m1i.dcm", a, photometric="MONOCHROME1", PresentationLUTShape="INVERSE", **kw)
    )
    np.testing.assert_allclose(mono1, 1.0 - plain, atol=1e-6)
    np.testing.assert_allclose(mono1_inv, mono1, atol=1e-6)  # the usual pairing: inverted once


def test_multi_frame_dicom_decodes_the_first_frame_with_a_warning(tmp_path, caplog):
    frames = np.stack([np.full((6, 5), v, np.uint8) for v in (10, 200, 90)])
    frames[0, 0, 0] = 0
    with caplog.at_level("WARNING"):
        img = decode_image(_dicom(tmp_path / "mf.dcm", frames))
    assert img.shape == (6, 5) and "only the first" in caplog.text
    np.testing.assert_allclose(img, frames[0] / 255.0, atol=1e-6)


# --------------------------------------------------------------------------- 8. checkpoints
def test_checkpoints_keep_two_remove_our_stale_temps_and_fall_back(tmp_path, monkeypatch, caplog):
    from codafeat._train.checkpoint import load_checkpoint

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    ours = ckpt / ".checkpoint.safetensors.0123456789ab.tmp"
    ours.write_bytes(b"half a checkpoint")
    theirs = [ckpt / "notes.tmp", ckpt / ".other.safetensors.0123456789ab.tmp"]
    for p in theirs:
        p.write_text("keep me")
    params = dict(TINY, epochs=3, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    assert not ours.exists() and all(p.exists() for p in theirs)
    assert load_checkpoint(ckpt / "checkpoint.safetensors")[1]["epochs_done"] == 2
    assert load_checkpoint(ckpt / "checkpoint.prev.safetensors")[1]["epochs_done"] == 1
    # the newest is corrupt: resume falls back to the previous one, with a warning
    (ckpt / "checkpoint.safetensors").write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        est = CodaPretrainer(**dict(params, resume=True)).fit(folder)
    assert "previous checkpoint" in caplog.text
    assert [h["epoch"] for h in est.history_] == [1, 2, 3]


def test_malformed_checkpoint_metadata_and_too_many_epochs_name_the_file(tmp_path):
    from safetensors.torch import save_file

    from codafeat._train.checkpoint import load_checkpoint

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    ckpt = tmp_path / "ckpt"
    CodaPretrainer(**dict(TINY, epochs=2, checkpoint_dir=ckpt)).fit(folder)
    path = ckpt / "checkpoint.safetensors"
    for meta, msg in (
        ("{not json", "not JSON"),
        ("[1, 2]", "expected an object"),
        ('{"epochs_done": "2"}', "epochs_done"),
    ):
        bad = tmp_path / "bad.safetensors"
        save_file({"x": torch.zeros(1)}, bad, metadata={"codafeat_checkpoint": meta})
        with pytest.raises(ValueError, match=msg) as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value)
    with pytest.raises(ValueError, match="more than epochs=1") as err:
        CodaPretrainer(**dict(TINY, epochs=1, checkpoint_dir=ckpt, resume=True)).fit(folder)
    assert str(path) in str(err.value)


def test_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path, monkeypatch):
    from codafeat._train.loop import CodaTrainer

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    (tmp_path / "ckfile").write_text("x")
    monkeypatch.setattr(CodaTrainer, "run_epoch", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(NotADirectoryError, match="checkpoint_dir"):
        CodaPretrainer(**dict(TINY, checkpoint_dir=tmp_path / "ckfile")).fit(folder)
    with pytest.raises(NotADirectoryError, match="log_dir"):
        CodaPretrainer(**dict(TINY, log_dir=tmp_path / "ckfile")).fit(folder)


# --------------------------------------------------------------------------- 9. weights
def _weights_file(tmp_path: Path, **config_changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    enc = CodaEncoder(**ENC).fit()
    path = tmp_path / "w.safetensors"
    enc.save(path)
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    key = next(k for k in meta if "config" in k)
    config = json.loads(meta[key])
    nan_tensor = config_changes.pop("_nan", None)
    config.update(config_changes)
    if nan_tensor:
        k = next(k for k in tensors if tensors[k].is_floating_point())
        tensors[k] = tensors[k].clone()
        tensors[k].view(-1)[0] = float("nan")
    save_file(tensors, path, metadata={**meta, key: json.dumps(config)})
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(_nan=True), "NaN or infinite"),
        (dict(image_size=10**9), "image_size"),
        (dict(embed_dim=10**8), "embed_dim"),
        (dict(pooling="median"), "pooling"),
        (dict(backbone="no_such_net"), "not a timm model"),
    ],
)
def test_bad_weights_are_refused_naming_the_file(tmp_path, change, message):
    path = _weights_file(tmp_path, **change)
    with pytest.raises(ValueError, match=message) as err:
        CodaEncoder(weights=str(path)).fit()
    assert str(path) in str(err.value)


def test_pickle_files_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    p = tmp_path / "w.safetensors"
    torch.save({"x": Evil()}, p)
    with pytest.raises(ValueError):
        CodaEncoder(weights=str(p)).fit()
    assert not marker.exists()


# --------------------------------------------------------------------------- 11. parameters
@pytest.mark.parametrize(
    "param, value",
    [
        ("lr", 1e39),
        ("lr", float("nan")),
        ("image_size", 10**9),
        ("temperature", float("inf")),
        ("batch_size", 10**12),
        ("min_lr", 0.5),
    ],
)
def test_absurd_parameters_are_refused_by_name_before_torch(param, value, tmp_path):
    with pytest.raises(ValueError, match=param):
        CodaPretrainer(**dict(TINY, **{param: value})).fit(tmp_path)


# --------------------------------------------------------------------------- 12. CLI errors
def test_cli_ends_a_diverged_run_in_one_error_line(tmp_path, monkeypatch, capsys, caplog):
    from codafeat._train.loop import CodaTrainer
    from codafeat.cli import main

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})

    def diverge(self, batch, epoch, it):
        raise FloatingPointError("the training loss became non-finite (nan) at epoch 0, step 0")

    monkeypatch.setattr(CodaTrainer, "step", diverge)
    assert main(tiny_pretrain_cli(folder, tmp_path / "m.safetensors")) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "non-finite" in errors[0].getMessage()
    assert "Traceback" not in capsys.readouterr().err


def test_cli_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, caplog):
    from codafeat.cli import main

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})
    monkeypatch.setattr(CodaPretrainer, "fit", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(tiny_pretrain_cli(folder, tmp_path / "m.safetensors")) == 130
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == ["interrupted"]


# --------------------------------------------------------------------------- cases that already worked
@pytest.mark.parametrize("case", ["empty", "truncated", "mislabelled", "missing", "text"])
def test_unreadable_files_raise_naming_them_or_are_skipped(tmp_path, case):
    good = random_grey_png(tmp_path / "good.png", size=40)
    p = tmp_path / f"{case}.png"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(random_grey_png(tmp_path / "t.png", size=200).read_bytes()[:3000])
    elif case == "mislabelled":
        p = tmp_path / "really_a_png.jpg"
        p.write_bytes(good.read_bytes())
    elif case == "text":
        p.write_text("not an image")
    if case == "mislabelled":  # content decides, not the suffix
        assert decode_image(p).shape == (40, 40)
        return
    with pytest.raises(ImageReadError) as err:
        CodaEncoder(**ENC).fit().transform([str(good), str(p)])
    assert err.value.path == str(p)
    enc = CodaEncoder(**dict(ENC, on_error="skip")).fit()
    E, skipped, *_ = enc.embed([str(good), str(p)])
    assert skipped == [str(p)] and np.isnan(E[1]).all() and np.isfinite(E[0]).all()


def test_nan_arrays_are_refused():
    with pytest.raises(ImageReadError, match="NaN"):
        io.load_image(np.full((8, 8), np.nan, np.float32))


def test_a_checkpoint_holding_nan_tensors_falls_back_to_the_previous_one(tmp_path, monkeypatch, caplog):
    """Issue 19, item 7: a checkpoint with NaN tensors is never resumed from."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from codafeat._train.checkpoint import load_checkpoint

    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8}, seed=7)
    ckpt = tmp_path / "ckpt"
    params = dict(TINY, epochs=3, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            CodaPretrainer(**params).fit(folder)
    newest = ckpt / "checkpoint.safetensors"
    with safe_open(str(newest), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(newest))
    key = next(k for k, v in tensors.items() if k.startswith("teacher") and v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(newest), metadata=meta)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_checkpoint(newest)
    with caplog.at_level("WARNING"):
        est = CodaPretrainer(**dict(params, resume=True)).fit(folder)
    assert "previous checkpoint" in caplog.text
    assert [h["epoch"] for h in est.history_] == [1, 2, 3]
    assert all(torch.isfinite(p).all() for p in est.teacher_.parameters())
