"""Pictures for people: activation maps over radiographs, learning curves, similar-case pages.

The figures use matplotlib's object API on an Agg canvas (the global pyplot backend is never
changed) and need the ``plot`` extra; the HTML page of :func:`neighbours_html` needs only
Pillow. Every function takes plain arrays and names, so any estimator's output can be drawn.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._fileio import atomic_write_bytes
from .data.io import load_image

__all__ = ["learning_curve", "neighbours_figure", "neighbours_html", "overlay"]


def _figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('figures need matplotlib: pip install "codafeat[plot]"') from exc
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike, dpi: int) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def overlay(
    image: Any,
    heatmap: np.ndarray,
    *,
    ax: Any = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
) -> Any:
    """Draw ``heatmap`` (an activation map in [0, 1], the image's own size) over ``image`` in grey.

    Parameters
    ----------
    image : path, array or PIL image
        The radiograph (read as :func:`codafeat.data.io.load_image` reads it).
    heatmap : ndarray of shape (h, w)
        The map, at the image's size (e.g. one of :meth:`codafeat.CodaClassifier.explain`'s).
    ax : matplotlib Axes or None
        Where to draw; ``None`` makes a figure of its own.
    alpha : float, default=0.45
        Opacity of the map.
    cmap : str, default="jet"
        Colour map of the map (red = most used).
    title : str or None
        Axes title.
    path : str or path or None
        Also write the figure there (PNG).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((40, 60), np.float32)
    >>> ax = overlay(img, np.linspace(0, 1, 40 * 60).reshape(40, 60), title="top left is low")
    >>> ax.get_title()
    'top left is low'
    """
    img = load_image(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != img.shape:
        raise ValueError(f"heatmap has shape {heat.shape}, but the image is {img.shape}: give the map at its size")
    fig = None
    if ax is None:
        h, w = img.shape
        fig = _figure((4.0 * w / max(h, w) + 0.4, 4.0 * h / max(h, w) + 0.4))
        ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    ax.imshow(heat, cmap=cmap, alpha=float(alpha), vmin=0, vmax=1, interpolation="bilinear")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=9)
    if path is not None:
        _save(ax.figure, path, dpi)
    return ax


def learning_curve(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    n_train: Mapping[str, int] | None = None,
    ylabel: str = "score",
    ax: Any = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
) -> Any:
    """Score against the number of training labels, one line per encoder, error bars over draws.

    The paper's Table 1 as a figure: ``curves[encoder][setting]`` holds the scores of every
    draw at a setting (``"10%"``, ``"5-shot"``), ``n_train[setting]`` the training images it
    means (the x axis, log scale; without it the settings are evenly spaced).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = learning_curve({"Coda": {"1%": [0.6, 0.7], "10%": [0.8, 0.82]},
    ...                      "random init": {"1%": [0.55, 0.5], "10%": [0.7, 0.72]}},
    ...                     n_train={"1%": 4, "10%": 40}, ylabel="ROC AUC")
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['Coda', 'random init']
    """
    if ax is None:
        ax = _figure((5.2, 3.6)).add_subplot(1, 1, 1)
    settings = list(dict.fromkeys(s for c in curves.values() for s in c))
    for name, scores in curves.items():
        keys = [s for s in settings if s in scores and len(scores[s])]
        x = [n_train[s] for s in keys] if n_train else [settings.index(s) for s in keys]
        mean = [float(np.mean(scores[s])) for s in keys]
        sd = [float(np.std(scores[s])) for s in keys]
        ax.errorbar(x, mean, yerr=sd, marker="o", capsize=3, label=name)
    if n_train:
        ax.set_xscale("log")
        ax.set_xlabel("training images (labels)")
        ticks = sorted({n_train[s] for s in settings if s in n_train})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    else:
        ax.set_xticks(range(len(settings)), settings)
        ax.set_xlabel("training labels")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title is not None:
        ax.set_title(title, fontsize=10)
    if path is not None:
        _save(ax.figure, path, dpi)
    return ax


def neighbours_figure(
    queries: Sequence[Any],
    neighbours: Sequence[Sequence[Any]],
    distances: np.ndarray,
    *,
    labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
) -> Any:
    """A grid: each query (first column, framed) and its neighbours, nearest first, with their distances.

    ``labels[i][j]`` (optional) is printed under neighbour ``j`` of query ``i`` (e.g. its organ).

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> imgs = [np.full((16, 16), v, np.float32) for v in (0.2, 0.5, 0.8)]
    >>> fig = neighbours_figure([imgs[0]], [[imgs[1], imgs[2]]], np.array([[0.1, 0.3]]))
    >>> len(fig.axes)
    3
    """
    rows, cols = len(queries), 1 + max(len(r) for r in neighbours)
    fig = _figure((1.7 * cols, 1.9 * rows + (0.4 if title else 0)))
    dist = np.atleast_2d(distances)
    for i, (q, row) in enumerate(zip(queries, neighbours)):
        ax = fig.add_subplot(rows, cols, i * cols + 1)
        ax.imshow(load_image(q), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor("#1f6feb"), spine.set_linewidth(3)
        ax.set_title("query", fontsize=8)
        for j, item in enumerate(row):
            ax = fig.add_subplot(rows, cols, i * cols + 2 + j)
            ax.imshow(load_image(item), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            extra = f"\n{labels[i][j]}" if labels is not None else ""
            ax.set_title(f"#{j + 1}  d={float(dist[i, j]):.3f}{extra}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        _save(fig, path, dpi)
    return fig


def _thumbnail(item: Any, side: int) -> str:
    """A greyscale PNG thumbnail (longest side ``side`` px) as a data URI; a grey tile for an unreadable image."""
    from PIL import Image

    try:
        arr = load_image(item)
        im = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))
    except Exception:  # noqa: BLE001 - the page still shows the name, over a plain tile
        im = Image.new("L", (side, side), 200)
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 1.5em;
       background: #fafafa; color: #222; }}
h1 {{ font-size: 1.3em; margin-bottom: 0.2em; }}
p.note {{ color: #555; font-size: 0.9em; margin-top: 0; }}
section {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; margin: 1em 0; }}
.row {{ display: flex; flex-wrap: wrap; gap: 0.6em; align-items: flex-start; }}
figure {{ margin: 0; width: {side}px; text-align: center; }}
figure img {{ width: {side}px; height: {side}px; object-fit: contain; background: #000; border-radius: 3px; }}
figure.query img {{ outline: 3px solid #1f6feb; }}
figcaption {{ font-size: 0.75em; word-break: break-all; }}
.dist {{ font-weight: 600; font-size: 0.85em; }}
.arrow {{ align-self: center; font-size: 1.6em; color: #888; padding: 0 0.2em; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="note">{note}</p>
{sections}
</body></html>
"""


def neighbours_html(
    queries: Sequence[Any],
    neighbours: Sequence[Sequence[Any]],
    distances: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "Similar cases",
    metric: str = "cosine",
    thumbnail: int = 160,
) -> Path:
    """Write an offline HTML page: each query beside its neighbours, as thumbnails with distances and names.

    The thumbnails are embedded in the page (PNG data URIs) and the page loads no script,
    font or style sheet from anywhere: it opens offline and can be sent as one file.

    Parameters
    ----------
    queries : sequence of paths or images
        The query images.
    neighbours : sequence of sequences of paths or images
        Each query's neighbours, nearest first (e.g. ``CodaIndex.search(...).paths``).
    distances : ndarray of shape (n_queries, k)
        Their distances.
    path : str or path
        The page to write (atomically).
    title : str
        The page's heading.
    metric : str
        The distance's name, shown in the note.
    thumbnail : int, default=160
        Thumbnail side in pixels.

    Returns
    -------
    Path

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> imgs = [np.full((20, 20), v, np.float32) for v in (0.2, 0.5, 0.8)]
    >>> page = neighbours_html([imgs[0]], [[imgs[1], imgs[2]]], np.array([[0.1, 0.3]]),
    ...                        tempfile.mkdtemp() + "/p.html")
    >>> text = page.read_text()
    >>> text.count("<img"), "http" in text.split("<body>")[1]
    (3, False)
    """
    side = int(thumbnail)

    def name(item: Any, fallback: str) -> str:
        return os.fspath(item) if isinstance(item, (str, os.PathLike)) else fallback

    sections = []
    for qi, (q, row, dists) in enumerate(zip(queries, neighbours, np.atleast_2d(distances))):
        qname = name(q, f"query {qi + 1}")
        cells = [
            f'<figure class="query"><img alt="query" src="{_thumbnail(q, side)}">'
            f"<figcaption><b>query</b><br>{html.escape(qname)}</figcaption></figure>",
            '<div class="arrow">&rarr;</div>',
        ]
        for rank, (item, d) in enumerate(zip(row, dists), start=1):
            nname = name(item, f"neighbour {rank}")
            cells.append(
                f'<figure><img alt="neighbour {rank}" src="{_thumbnail(item, side)}">'
                f'<figcaption><span class="dist">#{rank} &middot; {float(d):.3f}</span><br>'
                f"{html.escape(nname)}</figcaption></figure>"
            )
        sections.append(f'<section><div class="row">{"".join(cells)}</div></section>')
    note = (
        f"{len(sections)} quer{'y' if len(sections) == 1 else 'ies'}; neighbours nearest first, with their "
        f"{html.escape(metric)} distance (smaller is more alike). Generated by codafeat; works offline."
    )
    page = _PAGE.format(title=html.escape(title), note=note, sections="\n".join(sections), side=side)
    return atomic_write_bytes(path, page.encode("utf-8"))
