"""Pip-installable weights: ``build_weights_wheel`` / ``codafeat package-weights``."""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import codafeat.formats.weights as W
from codafeat import CodaEncoder, build_weights_wheel
from codafeat.formats.weights import WeightsError, list_weights, read_config, registered_path

NAME = "Tiny-Test.v1"
MODULE = "codafeat_weights_tiny_test_v1"
DIST = "codafeat-weights-tiny-test-v1"
VERSION = "1.2.0"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny test_convnext weights file, its embeddings of fixed images, and its wheel."""
    root = tmp_path_factory.mktemp("wheel")
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
    weights_file = enc.save(root / "tiny.safetensors")
    images = np.random.RandomState(1).randint(0, 256, size=(4, 40, 40)).astype(np.uint8)
    np.save(root / "images.npy", images)
    expected = CodaEncoder(weights=weights_file).fit().transform(images)
    np.save(root / "expected.npy", expected)
    wheel = build_weights_wheel(weights_file, name=NAME, version=VERSION, out_dir=root / "dist")
    return {"root": root, "file": weights_file, "images": images, "expected": expected, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """The wheel installed by pip (``--target``: pip's ordinary wheel installer)."""
    target = tmp_path_factory.mktemp("target")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(built["wheel"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _b64_sha256(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------- the archive
def test_wheel_name_and_members(built):
    wheel = built["wheel"]
    assert wheel.name == f"{MODULE}-{VERSION}-py3-none-any.whl"
    assert wheel.parent == built["root"] / "dist"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert set(names) == {
            f"{MODULE}/__init__.py",
            f"{MODULE}/README.md",
            f"{MODULE}/weights.safetensors",
            f"{MODULE}-{VERSION}.dist-info/METADATA",
            f"{MODULE}-{VERSION}.dist-info/WHEEL",
            f"{MODULE}-{VERSION}.dist-info/entry_points.txt",
            f"{MODULE}-{VERSION}.dist-info/top_level.txt",
            f"{MODULE}-{VERSION}.dist-info/RECORD",
        }
        assert names[-1].endswith("/RECORD")
        assert zf.read(f"{MODULE}/weights.safetensors") == built["file"].read_bytes()


def test_wheel_filename_follows_the_spec(built):
    utils = pytest.importorskip("packaging.utils")
    name, version, build, tags = utils.parse_wheel_filename(built["wheel"].name)
    assert name == utils.canonicalize_name(DIST) == DIST
    assert str(version) == VERSION and build == ()
    assert {str(t) for t in tags} == {"py3-none-any"}


def test_record_lists_every_file_with_its_sha256_and_size(built):
    with zipfile.ZipFile(built["wheel"]) as zf:
        rows = list(csv.reader(io.StringIO(zf.read(f"{MODULE}-{VERSION}.dist-info/RECORD").decode())))
        record = {path: (digest, size) for path, digest, size in rows}
        assert len(record) == len(rows) == len(zf.namelist())
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith("/RECORD"):
                assert record[name] == ("", "")
            else:
                assert record[name] == (_b64_sha256(data), str(len(data))), name


def test_metadata_wheel_and_entry_points(built):
    with zipfile.ZipFile(built["wheel"]) as zf:
        info = f"{MODULE}-{VERSION}.dist-info"
        meta = Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        wheel = Parser().parsestr(zf.read(f"{info}/WHEEL").decode())
        eps = configparser.ConfigParser(delimiters=("=",))
        eps.optionxform = str  # keep the name's case
        eps.read_string(zf.read(f"{info}/entry_points.txt").decode())
        top_level = zf.read(f"{info}/top_level.txt").decode().split()
    assert meta["Metadata-Version"] == "2.1"
    assert meta["Name"] == DIST
    assert meta["Version"] == VERSION
    assert "test_convnext" in meta["Summary"] and "\n" not in meta["Summary"]
    assert meta.get_all("Requires-Dist") == ["codafeat"]
    assert f'weights="{NAME}"' in meta.get_payload()
    assert wheel["Wheel-Version"] == "1.0"
    assert wheel["Root-Is-Purelib"] == "true"
    assert wheel.get_all("Tag") == ["py3-none-any"]
    assert dict(eps["codafeat.weights"]) == {NAME: f"{MODULE}:weights_path"}
    assert top_level == [MODULE]


def test_metadata_is_valid_for_packaging(built):
    pytest.importorskip("packaging.metadata")
    from packaging.metadata import Metadata

    with zipfile.ZipFile(built["wheel"]) as zf:
        meta = Metadata.from_email(zf.read(f"{MODULE}-{VERSION}.dist-info/METADATA"), validate=True)
    assert str(meta.version) == VERSION and meta.name == DIST


def test_build_is_reproducible(built, tmp_path):
    again = build_weights_wheel(built["file"], name=NAME, version=VERSION, out_dir=tmp_path)
    assert again.read_bytes() == built["wheel"].read_bytes()


def test_generated_module_imports_from_a_zip(built, monkeypatch):
    """Even imported straight from the archive, ``weights_path()`` gives a real file."""
    monkeypatch.syspath_prepend(str(built["wheel"]))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    import importlib

    mod = importlib.import_module(MODULE)
    try:
        path = mod.weights_path()
        assert path.read_bytes() == built["file"].read_bytes()
        assert mod.NAME == NAME
    finally:
        sys.modules.pop(MODULE, None)


# --------------------------------------------------------------------------- installed
@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_installed_wheel_is_found_by_name_in_a_fresh_interpreter(built, installed):
    script = textwrap.dedent(
        f"""
        import json, sys
        from importlib import metadata
        import numpy as np
        import codafeat
        from codafeat import CodaEncoder
        from codafeat.formats.weights import registered_path

        names = codafeat.list_weights()
        dist = metadata.distribution({DIST!r})
        bad = [str(f) for f in dist.files if f.hash and f.hash.mode == "sha256"
               and __import__("hashlib").sha256(f.read_binary()).digest()
               != __import__("base64").urlsafe_b64decode(f.hash.value + "==")]
        X = np.load({str(built["root"] / "images.npy")!r})
        emb = CodaEncoder(weights={NAME!r}).fit().transform(X)
        np.save({str(built["root"] / "by_name.npy")!r}, emb)
        print(json.dumps({{"names": names, "version": dist.version, "bad_hashes": bad,
                           "path": str(registered_path({NAME!r}))}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed), *sys.path]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert NAME in report["names"]
    assert report["version"] == VERSION
    assert report["bad_hashes"] == []
    assert Path(report["path"]).resolve() == (installed / MODULE / "weights.safetensors").resolve()
    by_name = np.load(built["root"] / "by_name.npy")
    assert by_name.dtype == np.float32 and by_name.shape == (4, 64)
    assert np.array_equal(by_name, built["expected"])


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_installed_wheel_is_found_in_process(built, installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    try:
        assert NAME in list_weights()
        path = registered_path(NAME)
        assert path.read_bytes() == built["file"].read_bytes()
        assert read_config(NAME) == read_config(built["file"])
        emb = CodaEncoder(weights=NAME).fit().transform(built["images"])
        assert np.array_equal(emb, built["expected"])
    finally:
        sys.modules.pop(MODULE, None)


# --------------------------------------------------------------------------- names and versions
@pytest.mark.parametrize(
    "name, module, dist",
    [
        ("chest", "codafeat_weights_chest", "codafeat-weights-chest"),
        ("My_Weights.v2", "codafeat_weights_my_weights_v2", "codafeat-weights-my-weights-v2"),
        ("a--b__c..d", "codafeat_weights_a_b_c_d", "codafeat-weights-a-b-c-d"),
        ("2024", "codafeat_weights_2024", "codafeat-weights-2024"),
    ],
)
def test_name_normalisation(built, tmp_path, name, module, dist):
    wheel = build_weights_wheel(built["file"], name=name, out_dir=tmp_path)
    assert wheel.name == f"{module}-0.1.0-py3-none-any.whl"
    assert module.isidentifier()
    with zipfile.ZipFile(wheel) as zf:
        meta = Parser().parsestr(zf.read(f"{module}-0.1.0.dist-info/METADATA").decode())
        eps = zf.read(f"{module}-0.1.0.dist-info/entry_points.txt").decode()
    assert meta["Name"] == dist
    assert f"\n{name} = {module}:weights_path\n" in eps
    utils = pytest.importorskip("packaging.utils")
    assert utils.canonicalize_name(meta["Name"]) == dist


@pytest.mark.parametrize(
    "name", ["", "-lead", "trail.", "has space", "sl/ash", "eq=ual", "x" * 65, "model.safetensors", None, 3]
)
def test_invalid_names_are_rejected(built, tmp_path, name):
    with pytest.raises(ValueError, match="weights name"):
        build_weights_wheel(built["file"], name=name, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("version", ["", "1.0-beta", "v1", "01.0", "1.0+local", "1.0 ", None])
def test_invalid_versions_are_rejected(built, tmp_path, version):
    with pytest.raises(ValueError, match="version"):
        build_weights_wheel(built["file"], name="ok", version=version, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("version", ["0", "1.0", "2.0.1", "1.0a1", "1.0rc2", "1.0.post1", "1.0.dev3", "1!2.0"])
def test_canonical_versions_are_accepted(built, tmp_path, version):
    packaging_version = pytest.importorskip("packaging.version")
    assert str(packaging_version.Version(version)) == version  # canonical, per packaging
    wheel = build_weights_wheel(built["file"], name="ok", version=version, out_dir=tmp_path)
    assert wheel.name == f"codafeat_weights_ok-{version}-py3-none-any.whl"


# --------------------------------------------------------------------------- input checks
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        build_weights_wheel(tmp_path / "nope.safetensors", name="x", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_codafeat_files_are_rejected(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"backbone.w": torch.ones(2)}))
    for path in (evil, plain):
        with pytest.raises(WeightsError, match=path.name):
            build_weights_wheel(path, name="x", out_dir=tmp_path / "out")
    assert not marker.exists()
    assert not list(tmp_path.glob("out/*.whl"))


def test_corrupt_tensor_data_is_rejected(built, tmp_path):
    data = built["file"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])  # header fine, tensors incomplete
    with pytest.raises(WeightsError, match="cut.safetensors.*not a valid safetensors"):
        build_weights_wheel(cut, name="x", out_dir=tmp_path / "out")


def test_existing_wheel_is_replaced_atomically(built, tmp_path, monkeypatch):
    first = build_weights_wheel(built["file"], name="x", out_dir=tmp_path)
    old = first.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        build_weights_wheel(built["file"], name="x", version="0.1.0", out_dir=tmp_path)
    assert first.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_exported_from_the_package_without_an_import_cycle():
    import codafeat
    from codafeat.formats import wheel

    assert codafeat.build_weights_wheel is wheel.build_weights_wheel
    assert not hasattr(W, "build_weights_wheel"), "formats/weights.py must not reach back into formats/wheel.py"
    with pytest.raises(AttributeError):
        codafeat.no_such_attribute  # noqa: B018


# --------------------------------------------------------------------------- CLI
def test_package_weights_command(built, tmp_path, capsys):
    from codafeat.cli import main

    out = tmp_path / "out"
    rc = main(["package-weights", str(built["file"]), "--name", "cli-test", "--version", "3.1", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "codafeat_weights_cli_test-3.1-py3-none-any.whl")
    with zipfile.ZipFile(printed) as zf:
        assert zf.read("codafeat_weights_cli_test/weights.safetensors") == built["file"].read_bytes()


def test_package_weights_command_defaults(built, tmp_path, monkeypatch, capsys):
    from codafeat.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["package-weights", str(built["file"]), "--name", "d"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join("dist", "codafeat_weights_d-0.1.0-py3-none-any.whl")
    assert (tmp_path / "dist" / "codafeat_weights_d-0.1.0-py3-none-any.whl").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "bad name"], "weights name"),
        (["--name", "ok", "--version", "x.y"], "version"),
    ],
)
def test_package_weights_command_errors(built, tmp_path, caplog, args, message):
    from codafeat.cli import main

    rc = main(["package-weights", str(built["file"]), *args, "--out", str(tmp_path)])
    assert rc == 1
    assert re.search(message, caplog.text)
    assert not list(tmp_path.iterdir())


def test_package_weights_command_missing_file(tmp_path, caplog):
    from codafeat.cli import main

    assert main(["package-weights", str(tmp_path / "nope.safetensors"), "--name", "x", "--out", str(tmp_path)]) == 1
    assert "nope.safetensors" in caplog.text


def test_nan_tensors_and_foreign_backbones_are_refused_before_packaging(built, tmp_path):
    """Issue 19, item 8: the whole file is checked as every use will load it."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from codafeat.formats.weights import CONFIG_KEY

    with safe_open(str(built["file"]), framework="pt") as fh:
        meta = fh.metadata()
    raw = load_file(str(built["file"]))
    key = next(k for k, v in raw.items() if v.is_floating_point())
    save_file(
        dict(raw, **{key: torch.full_like(raw[key], float("nan"))}), str(tmp_path / "nan.safetensors"), metadata=meta
    )
    with pytest.raises(WeightsError, match="nan.safetensors"):
        build_weights_wheel(tmp_path / "nan.safetensors", name="x", out_dir=tmp_path / "out")
    hostile = dict(json.loads(meta[CONFIG_KEY]), backbone='test_convnext"""\nimport os')
    save_file(raw, str(tmp_path / "odd.safetensors"), metadata={**meta, CONFIG_KEY: json.dumps(hostile)})
    with pytest.raises(WeightsError, match="odd.safetensors.*timm model"):
        build_weights_wheel(tmp_path / "odd.safetensors", name="x", out_dir=tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True


def test_user_strings_enter_the_generated_module_through_repr():
    from codafeat.formats.wheel import _module_source

    src = _module_source('a"""b', {"backbone": 'x"""\nraise SystemExit(1)\n"""'})
    ns: dict = {"__name__": "generated"}
    exec(compile(src, "generated.py", "exec"), ns)
    assert ns["NAME"] == 'a"""b' and "raise SystemExit(1)" in ns["__doc__"]
