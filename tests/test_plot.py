"""Pictures for people (codafeat/plot.py): activation-map overlays, learning curves, the similar-case page."""

from __future__ import annotations

import numpy as np
import pytest

from codafeat.plot import learning_curve, neighbours_html, overlay

pytest.importorskip("matplotlib")


def test_overlay_draws_the_map_at_the_image_size_and_refuses_another_size(tmp_path):
    img = np.zeros((30, 50), np.float32)
    heat = np.zeros((30, 50), np.float32)
    heat[:10, :10] = 1.0
    ax = overlay(img, heat, title="corner", path=tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 0 and ax.get_title() == "corner"
    assert [im.get_array().shape for im in ax.get_images()] == [(30, 50), (30, 50)]
    with pytest.raises(ValueError, match=r"heatmap has shape \(8, 8\), but the image is \(30, 50\)"):
        overlay(img, np.zeros((8, 8)))


def test_learning_curve_puts_each_encoder_at_its_training_sizes_with_draw_spread(tmp_path):
    curves = {"Coda": {"1%": [0.6, 0.8], "10%": [0.9, 0.9]}, "pixels": {"1%": [0.5, 0.5]}}
    ax = learning_curve(curves, n_train={"1%": 3, "10%": 30}, ylabel="AUC", path=tmp_path / "c.png")
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) and line.get_marker() == "o"]
    assert [list(line.get_xdata()) for line in lines] == [[3, 30], [3]]
    assert list(lines[0].get_ydata()) == pytest.approx([0.7, 0.9])
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "AUC" and (tmp_path / "c.png").exists()


def test_the_page_names_every_image_escapes_names_and_embeds_its_thumbnails(tmp_path):
    from PIL import Image

    q = tmp_path / "q <1>.png"
    Image.fromarray(np.full((12, 30), 90, np.uint8)).save(q)
    page = neighbours_html(
        [str(q)],
        [[str(q), str(tmp_path / "missing.png")]],
        np.array([[0.0, 0.5]]),
        tmp_path / "p.html",
        title="T & cases",
    )
    text = page.read_text()
    assert "q &lt;1&gt;.png" in text and "T &amp; cases" in text and "#2 &middot; 0.500" in text
    assert text.count("data:image/png;base64,") == 3, "an unreadable neighbour still gets a (grey) tile"
