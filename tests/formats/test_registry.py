"""The registry of installed weights: names, entry points, resolution, and ``codafeat list-weights``
(codafeat.formats.registry)."""

from __future__ import annotations

import argparse
import logging
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import codafeat.formats.registry as R
from codafeat import CodaEncoder
from codafeat._cli import list_weights as list_weights_cli
from codafeat.formats.registry import ENTRY_POINT_GROUP, list_weights, registered_path, resolve_weights
from codafeat.formats.weights import WeightsError, load_weights, save_weights

from helpers import tiny_config


@pytest.fixture
def no_registry(monkeypatch):
    monkeypatch.setattr(R, "_entry_points", lambda: [])


@pytest.mark.parametrize("spec", ["missing.safetensors", "some/dir/missing", Path("missing")])
def test_resolve_missing_file_says_it_does_not_exist(tmp_path, monkeypatch, no_registry, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(spec)
    with pytest.raises(WeightsError, match="does not exist"):
        CodaEncoder(weights=spec).fit()


def test_resolve_directory_is_an_error(tmp_path, no_registry):
    with pytest.raises(WeightsError, match="not a file"):
        resolve_weights(tmp_path)


def test_resolve_rejects_non_paths():
    with pytest.raises(TypeError, match="registered name"):
        resolve_weights(3)


def test_unknown_name_lists_registered_names(monkeypatch):
    eps = [metadata.EntryPoint(name=n, value="nowhere:fn", group=ENTRY_POINT_GROUP) for n in ("zeta", "alpha")]
    monkeypatch.setattr(R, "_entry_points", lambda: eps)
    assert list_weights() == ["alpha", "zeta"]
    with pytest.raises(WeightsError, match=r"'chest'.*registered: \['alpha', 'zeta'\]"):
        resolve_weights("chest")


def test_unknown_name_with_empty_registry_says_how_to_install(no_registry):
    assert list_weights() == []
    with pytest.raises(WeightsError, match="pip install a codafeat-weights"):
        resolve_weights("chest")


def _fake_distribution(root: Path, dist: str, entries: dict[str, str], module: str, body: str) -> None:
    """An installed distribution on ``root``: a module and a .dist-info with entry points."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    (root / f"{module}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_state):
    """Real entry points on sys.path: one good, one failing, one pointing to a missing file."""
    weights_file = save_weights(tmp_path / "files" / "good.safetensors", tiny_state, tiny_config())
    root = tmp_path / "site"
    mod = f"fake_codafeat_weights_{abs(hash(str(tmp_path)))}"
    _fake_distribution(
        root,
        "fake_weights_dist",
        {"good": f"{mod}:good", "broken": f"{mod}:broken", "gone": f"{mod}:gone"},
        mod,
        f"""
        from pathlib import Path
        def good():
            return Path({str(weights_file)!r})
        def broken():
            raise RuntimeError("cannot find my data")
        def gone():
            return {str(tmp_path / "nothing.safetensors")!r}
        """,
    )
    monkeypatch.syspath_prepend(str(root))
    return weights_file


def test_registered_names_resolve_through_entry_points(registry, images):
    assert {"good", "broken", "gone"} <= set(list_weights())
    assert registered_path("good") == registry
    assert resolve_weights("good") == registry
    state, config = load_weights("good")
    assert config["backbone"] == "test_convnext"
    by_name = CodaEncoder(weights="good").fit().transform(images)
    by_file = CodaEncoder(weights=registry).fit().transform(images)
    assert np.array_equal(by_name, by_file)


def test_broken_registrations_are_clear_errors(registry):
    with pytest.raises(WeightsError, match="'broken'.*fake_weights_dist.*cannot find my data"):
        registered_path("broken")
    with pytest.raises(WeightsError, match="'gone'.*missing file.*nothing.safetensors"):
        registered_path("gone")


def test_a_local_file_wins_over_a_registered_name(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("good").write_bytes(registry.read_bytes())
    assert resolve_weights("good") == Path("good")


def test_duplicate_registration_warns(registry, tmp_path, monkeypatch, caplog):
    root = tmp_path / "site2"
    mod = f"fake_dup_{abs(hash(str(tmp_path)))}"
    _fake_distribution(root, "another_dist", {"good": f"{mod}:fn"}, mod, f"def fn():\n    return {str(registry)!r}\n")
    monkeypatch.syspath_prepend(str(root))
    with caplog.at_level(logging.WARNING, logger="codafeat.formats.registry"):
        assert registered_path("good") == registry
    assert "several distributions" in caplog.text
    assert "another_dist" in caplog.text and "fake_weights_dist" in caplog.text


# --------------------------------------------------------------------------- list-weights CLI
def _run_list_weights(capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    list_weights_cli.add_arguments(parser)
    rc = list_weights_cli.run(parser.parse_args([]))
    return rc, capsys.readouterr().out


def test_list_weights_cli_with_nothing_installed(no_registry, capsys):
    rc, out = _run_list_weights(capsys)
    assert rc == 0
    assert "no weights installed" in out


def test_list_weights_cli_lists_names_and_reports_broken_ones(registry, capsys):
    rc, out = _run_list_weights(capsys)
    lines = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert lines["good"] == ["good", "test_convnext", "32", str(registry)]
    assert lines["broken"][1] == "ERROR" and "cannot find my data" in lines["broken"][2]
    assert lines["gone"][1] == "ERROR"
    assert rc == 1


def test_list_weights_is_wired_into_the_codafeat_command(no_registry, capsys):
    from codafeat.cli import main

    assert main(["list-weights"]) == 0
    assert "no weights installed" in capsys.readouterr().out
