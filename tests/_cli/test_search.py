"""``codafeat index`` and ``codafeat search`` (codafeat/_cli/index.py, search.py), and the offline HTML page."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from codafeat import CodaEncoder
from codafeat.cli import main


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    for organ, level in (("chest", 60), ("hand", 190)):
        (root / "data" / organ).mkdir(parents=True)
        for i in range(4):
            img = np.clip(level + 25 * rng.standard_normal((40, 40)), 0, 255).astype(np.uint8)
            img[5 + 3 * i : 15 + 3 * i, 5:15] = 255 - level  # a square that moves, so no two images agree
            Image.fromarray(img).save(root / "data" / organ / f"{organ}_{i}.png")
    weights = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit().save(root / "w.safetensors")
    return root, weights


def test_index_then_search_prints_neighbours_and_writes_an_offline_page(archive, tmp_path, capsys):
    root, weights = archive
    idx = tmp_path / "idx"
    common = ["--device", "cpu", "--num-workers", "0", "--verbose", "0"]
    assert (
        main(["index", str(root / "data"), "--weights", str(weights), "--out", str(idx), "--backend", "exact", *common])
        == 0
    )
    assert sorted(p.name for p in idx.iterdir()) == ["encoder.safetensors", "index.json", "paths.txt", "vectors.bin"]
    capsys.readouterr()
    query = root / "data" / "hand" / "hand_2.png"
    page = tmp_path / "page.html"
    assert main(["search", str(idx), str(query), "--k", "3", "--html", str(page), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query\trank\tdistance\timage" and len(lines) == 4
    first = lines[1].split("\t")
    assert first[0] == str(query) and first[1] == "1" and first[3] == str(query), "an archived image finds itself"
    text = page.read_text()
    assert text.count("<img") == 4 and "hand_2.png" in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "nothing is loaded from the network"


def test_search_refuses_a_page_over_an_input_and_a_missing_index(archive, tmp_path, caplog):
    root, _ = archive
    with caplog.at_level("ERROR"):
        assert main(["search", str(tmp_path / "none"), str(root / "data"), "--k", "1"]) == 1
    assert "not a complete codafeat index" in caplog.text
    image = root / "data" / "chest" / "chest_0.png"
    with caplog.at_level("ERROR"):
        assert main(["search", str(tmp_path / "none"), str(image), "--html", str(image)]) == 1
    assert "is one of the inputs" in caplog.text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_the_page_renders_in_a_headless_browser(archive, tmp_path):
    """The page opened in a real browser (Debian's Chromium, offline flags): thumbnails drawn, not blank."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt install chromium)")
    root, weights = archive
    idx = tmp_path / "idx"
    assert (
        main(
            [
                "index",
                str(root / "data"),
                "--weights",
                str(weights),
                "--out",
                str(idx),
                "--device",
                "cpu",
                "--num-workers",
                "0",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    page = tmp_path / "page.html"
    queries = [str(root / "data" / "chest" / "chest_1.png"), str(root / "data" / "hand" / "hand_3.png")]
    assert main(["search", str(idx), *queries, "--k", "4", "--html", str(page), "--device", "cpu"]) == 0
    shot = tmp_path / "page.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    subprocess.run(
        [
            browser,
            *flags,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,800",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), "the browser wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (800, 1200)
    background = np.array([250, 250, 250])
    drawn = np.abs(img - background).sum(axis=2) > 60
    assert drawn.mean() > 0.1, "the page shows its thumbnails (not a blank page)"
    blue = (img[..., 2] > 200) & (img[..., 0] < 80) & (img[..., 1] > 80) & (img[..., 1] < 150)
    assert blue.sum() > 200, "the query's outline (#1f6feb) is drawn"
