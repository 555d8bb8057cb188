"""The ``codafeat demo`` main job: pretrain a small Coda model on the CPU and show what it learned.

Steps, all written to one output folder:

1. data: synthetic radiograph phantoms (:func:`codafeat.phantoms.make_radiograph_phantoms`,
   six organs, two within-organ variants each) written as an organ-per-folder tree, plus a
   disjoint evaluation set drawn with another seed; or, with ``data=DIR``, a real
   organ-per-folder dataset split into pretraining (80 %) and held-out evaluation (20 %)
   images, stratified by organ;
2. pretraining: :class:`~codafeat.CodaPretrainer` with the ``small`` recipe (see
   :data:`DEMO_SETTINGS`: a small ConvNeXt, 64-px views, smaller heads than the paper's, a
   faster EMA teacher), with a progress bar showing the training monitor's figures;
3. zero-shot analysis on the evaluation images, Coda against the same backbone randomly
   initialised: organ separation (leave-one-out kNN accuracy, NMI, ARI, silhouette) and,
   for the phantoms, within-organ variant separation (paper Fig. 2a and 2b); t-SNE maps;
4. a few-shot table (linear probe on frozen embeddings, 1/5/10 shots per class);
5. pictures: the few-shot learning curve, a similar-case panel (three held-out images and
   their nearest held-out neighbours, also as an offline HTML page) and the Grad-CAM maps of a
   classifier fine-tuned on the demo's organs (needs the ``explain`` extra);
6. ``report.md``, ``embedding_coda.png``, ``embedding_random.png``, ``learning_curve.png``,
   ``neighbours.png``, ``neighbours.html``, ``activation_maps.png``, ``coda.safetensors``,
   ``history.json``.

The settings are a demonstration at CPU scale, not the paper's (ConvNeXt-B, 224 px,
800 epochs, 23 organs): the point is the comparison with random initialisation.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .recipes import get_recipe

logger = logging.getLogger(__name__)

#: Pretraining settings of the demo: the ``small`` recipe (:mod:`codafeat.recipes`), with
#: more epochs because the phantom set is small (360 images).
DEMO_SETTINGS: dict[str, Any] = get_recipe("small", epochs=30)
#: Added on the synthetic phantoms only. Their within-organ variation is too small for the
#: intra-organ branch: without DINOv2's KoLeo term its teacher's targets go uniform (DINO's
#: uniform collapse, and the monitor warns). On real radiographs the recipe does not collapse
#: and the term did not help transfer (benchmarks/RESULTS.md, issues 10 and 22).
PHANTOM_SETTINGS: dict[str, Any] = {"koleo_weight": 0.1}


@dataclass
class DemoResult:
    """What the demo measured (also written to ``report.md``)."""

    out_dir: Path
    separation: dict[str, dict[str, float]]
    variants: dict[str, dict[str, float]] | None
    few_shot: Any
    history: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None
    report: Path | None = None

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = ["", "codafeat demo: zero-shot separation on held-out images (higher is better)"]
        lines.append(f"{'':24s}{'Coda':>10s}{'random init':>14s}")
        for key in ("knn_accuracy", "nmi", "ari", "silhouette"):
            lines.append(f"organs  {key:16s}{self.separation['coda'][key]:10.3f}{self.separation['random'][key]:14.3f}")
        if self.variants:
            for key in ("knn_accuracy", "nmi"):
                lines.append(
                    f"variants {key:15s}{self.variants['coda'][key]:10.3f}{self.variants['random'][key]:14.3f}"
                )
        first, last = self.history[0], self.history[-1]
        if "ln_k" in last:
            lines.append(
                f"intra-organ loss {first['loss_intra']:.2f} -> {last['loss_intra']:.2f} (ln K = {last['ln_k']:.2f}); "
                f"monitor (held-out training images): kNN {last['monitor_knn_accuracy']:.3f}, "
                f"NMI {last['monitor_nmi']:.3f}, teacher entropy {last['teacher_entropy'] / last['ln_k']:.2f} ln K"
            )
        lines.append("")
        lines.append(str(self.few_shot))
        lines.append("")
        lines.append(f"report: {self.report}")
        lines.append(f"weights: {self.weights}")
        lines.append(f"total time: {sum(self.timings.values()):.0f}s")
        return "\n".join(lines)


def _phantom_data(out: Path, n_per_organ: int, n_eval_per_organ: int, random_state: int):
    from .data.manifest import write_image_folder
    from .phantoms import make_radiograph_phantoms

    X, organs, variants = make_radiograph_phantoms(n_per_organ, image_size=64, random_state=random_state)
    folder = write_image_folder(X, organs, out / "data", variants=variants, overwrite=True)
    Xe, organs_e, variants_e = make_radiograph_phantoms(n_eval_per_organ, image_size=64, random_state=random_state + 1)
    return folder, None, Xe, organs_e, variants_e


def _real_data(data: str | os.PathLike, random_state: int):
    from sklearn.model_selection import train_test_split

    from .data.manifest import scan_organ_folder

    paths, organs = scan_organ_folder(data)
    idx_train, idx_eval = train_test_split(
        np.arange(len(paths)), test_size=0.2, stratify=organs, random_state=random_state
    )
    train = [paths[i] for i in idx_train]
    evaluation = [paths[i] for i in idx_eval]
    return train, organs[idx_train], evaluation, organs[idx_eval], None


def run_demo(
    out_dir: str | os.PathLike = "codafeat-demo",
    *,
    data: str | os.PathLike | None = None,
    n_per_organ: int = 60,
    n_eval_per_organ: int = 40,
    settings: dict[str, Any] | None = None,
    shots: tuple[int, ...] = (1, 5, 10),
    n_repeats: int = 10,
    random_state: int = 0,
    verbose: int = 1,
) -> DemoResult:
    """Run the demo (see the module docstring) and return what it measured.

    Parameters
    ----------
    out_dir : str or path, default="codafeat-demo"
        Output folder (created; files in it are replaced).
    data : str or path, optional
        A real organ-per-folder dataset instead of the synthetic phantoms.
    n_per_organ, n_eval_per_organ : int, default=60, 40
        Phantom images per organ for pretraining and for evaluation.
    settings : dict, optional
        Overrides of :data:`DEMO_SETTINGS` (any CodaPretrainer parameter); on the phantoms
        the demo adds :data:`PHANTOM_SETTINGS` first.
    shots : tuple of int, default=(1, 5, 10)
        Labelled images per class in the few-shot table.
    n_repeats : int, default=10
        Random draws per few-shot setting.
    random_state : int, default=0
        Seed of data, pretraining and evaluation.
    verbose : int, default=1
        Progress bars.
    """
    from .encoder import CodaEncoder
    from .pretrain import CodaPretrainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(DEMO_SETTINGS, **(PHANTOM_SETTINGS if data is None else {}), **(settings or {}))
    timings: dict[str, float] = {}

    t = time.perf_counter()
    if data is None:
        train_X, train_y, eval_X, eval_y, eval_v = _phantom_data(out, n_per_organ, n_eval_per_organ, random_state)
        source = f"synthetic phantoms ({n_per_organ} per organ for pretraining, {n_eval_per_organ} per organ held out)"
    else:
        train_X, train_y, eval_X, eval_y, eval_v = _real_data(data, random_state)
        source = f"{data} ({len(train_X)} images for pretraining, {len(eval_X)} held out, stratified by organ)"
    timings["data"] = time.perf_counter() - t
    logger.info("demo data: %s", source)

    t = time.perf_counter()
    pre = CodaPretrainer(**params, random_state=random_state, verbose=verbose)
    pre.fit(train_X, train_y)
    timings["pretraining"] = time.perf_counter() - t
    weights = pre.save(out / "coda.safetensors")
    (out / "history.json").write_text(json.dumps(pre.history_, indent=2))

    t = time.perf_counter()
    encoders = {
        "coda": pre.encoder_,
        "random": CodaEncoder(
            backbone=params["backbone"], image_size=params["image_size"], random_state=random_state
        ).fit(),
    }
    emb = {name: enc.transform(eval_X) for name, enc in encoders.items()}
    timings["embedding"] = time.perf_counter() - t

    t = time.perf_counter()
    separation, variants, few, pngs = _analyse(
        emb, eval_y, eval_v, out, shots=shots, n_repeats=n_repeats, random_state=random_state
    )
    timings["analysis"] = time.perf_counter() - t

    t = time.perf_counter()
    pngs.update(_pictures(out, pre, few, train_X, train_y, eval_X, eval_y, params, random_state))
    timings["pictures"] = time.perf_counter() - t

    result = DemoResult(out, separation, variants, few, pre.history_, timings, weights)
    result.report = _write_report(result, source, params, pngs, pre)
    return result


def _pictures(out: Path, pre, few, train_X, train_y, eval_X, eval_y, params, random_state) -> dict[str, Path]:
    """The learning curve, a similar-case panel and an activation-map panel (each skipped, with a
    warning, when its extra is missing)."""
    pngs: dict[str, Path] = {}
    try:
        few.plot(title="Few-shot organ classification (linear probe, frozen)", path=out / "learning_curve.png")
        pngs["learning_curve"] = out / "learning_curve.png"
        pngs["neighbours"] = _neighbours_panel(out, pre.encoder_, eval_X, eval_y)
    except ImportError as exc:  # matplotlib is an extra
        logger.warning("no pictures: %s", exc)
        return pngs
    try:
        pngs["activation_maps"] = _activation_panel(out, pre, train_X, train_y, eval_X, eval_y, params, random_state)
    except ImportError as exc:  # pytorch-grad-cam is an extra
        logger.warning("no activation maps: %s", exc)
    return pngs


def _first_per_organ(labels: np.ndarray, n: int) -> list[int]:
    organs = list(dict.fromkeys(np.asarray(labels).tolist()))[:n]
    return [int(np.flatnonzero(np.asarray(labels) == o)[0]) for o in organs]


def _neighbours_panel(out: Path, encoder, eval_X, eval_y, k: int = 5) -> Path:
    """Three held-out images (three organs) and their nearest held-out neighbours (themselves left out)."""
    from .index import CodaIndex
    from .plot import neighbours_figure, neighbours_html

    index = CodaIndex(encoder=encoder, backend="exact").fit(eval_X)
    k = min(k, index.n_vectors_ - 1)
    picks = _first_per_organ(eval_y, 3)
    res = index.search([eval_X[i] for i in picks], k=k + 1)
    rows = [[j for j in row if j != i][:k] for i, row in zip(picks, res.indices)]
    dists = np.array(
        [[d for j, d in zip(ri, rd) if j != i][:k] for i, ri, rd in zip(picks, res.indices, res.distances)]
    )
    labels = [[str(eval_y[j]) for j in row] for row in rows]
    images = [[eval_X[j] for j in row] for row in rows]
    queries = [eval_X[i] for i in picks]
    neighbours_html(queries, images, dists, out / "neighbours.html", title="Similar held-out cases (demo)")
    neighbours_figure(
        queries,
        images,
        dists,
        labels=labels,
        title="Similar held-out cases (Coda, cosine distance)",
        path=out / "neighbours.png",
    )
    return out / "neighbours.png"


def _activation_panel(out: Path, pre, train_X, train_y, eval_X, eval_y, params, random_state) -> Path:
    """A CodaClassifier fine-tuned on the demo's organs, and where it looks on three held-out images."""
    from .classifier import CodaClassifier
    from .plot import _figure, _save, overlay

    if train_y is None:  # an organ-per-folder tree
        from .data.manifest import scan_organ_folder

        train_X, train_y = scan_organ_folder(train_X)
    clf = CodaClassifier(weights=pre.encoder_, epochs=10, batch_size=32, random_state=random_state, num_workers=0)
    clf.fit(train_X, train_y)
    picks = _first_per_organ(eval_y, 3)
    images = [eval_X[i] for i in picks]
    maps = clf.explain(images)
    predicted = clf.predict(images)
    fig = _figure((3.2 * len(images), 3.5))
    for n, (img, heat, organ, pred) in enumerate(zip(images, maps, (eval_y[i] for i in picks), predicted)):
        overlay(img, heat, ax=fig.add_subplot(1, len(images), n + 1), title=f"a {organ}, predicted: {pred}")
    fig.suptitle("Grad-CAM: where a classifier fine-tuned on the demo's organs looks (red: most used)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "activation_maps.png", 110)


#: Row names of the demo's tables.
_NAMES = {"coda": "Coda (ours, demo scale)", "random": "random init"}


def _analyse(
    emb: dict[str, np.ndarray],
    eval_y: np.ndarray,
    eval_v: Any,
    out: Path,
    *,
    shots: tuple[int, ...],
    n_repeats: int,
    random_state: int,
) -> tuple[dict, dict | None, Any, dict[str, Path]]:
    """Zero-shot separation, variant separation, few-shot probes and pictures of each encoder's embeddings."""
    from .analysis import organ_separation, plot_embedding, variant_separation
    from .fewshot.probes import linear_probe

    k = int(min(5, len(eval_y) - 1))
    separation = {
        name: organ_separation(E, eval_y, n_neighbors=k, random_state=random_state) for name, E in emb.items()
    }
    variants = None
    if eval_v is not None:
        variants = {
            name: variant_separation(E, eval_y, eval_v, n_neighbors=k, random_state=random_state)["mean"]
            for name, E in emb.items()
        }
    few = None
    for name, E in emb.items():
        r = linear_probe(
            E, eval_y, None, shots=list(shots), n_repeats=n_repeats, random_state=random_state, name=_NAMES[name]
        )
        few = r if few is None else few + r
    pngs = {}
    for name, E in emb.items():
        try:
            pngs[name] = plot_embedding(
                E,
                eval_y,
                "tsne",
                out / f"embedding_{name}.png",
                variants=eval_v,
                title=f"{_NAMES[name]}: t-SNE of held-out images",
                random_state=random_state,
            )
        except ImportError as exc:  # matplotlib is an extra
            logger.warning("no pictures: %s", exc)
    return separation, variants, few, pngs


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _history_lines(r: DemoResult, params: dict[str, Any]) -> list[str]:
    """The report's training history table, its monitor figures and the collapse warnings."""
    lines = [
        "## Training history and monitor",
        "",
        "The monitor embeds held-out training images with the teacher after each epoch: organ kNN "
        "accuracy and NMI, the teacher's intra-organ target entropy over ln K (1 = uniform: nothing to "
        "distil) and the information its targets carry about the image (MI, nats; 0 = collapse).",
        "",
        "`loss` = inter-organ + intra-organ"
        + (f" + {params['koleo_weight']} x KoLeo" if params.get("koleo_weight") else "")
        + " (the weights this run trained with; on the phantoms the demo adds the KoLeo term, which keeps their "
        "intra-organ branch from collapsing).",
        "",
        "| epoch | loss | inter-organ | intra-organ | KoLeo | monitor kNN | monitor NMI | H_t / ln K | MI | lr "
        "| img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in r.history:
        ratio = h["teacher_entropy"] / h["ln_k"] if "teacher_entropy" in h else None
        lines.append(
            f"| {h['epoch']} | {_fmt(h['loss'])} | {_fmt(h['loss_inter'])} | {_fmt(h['loss_intra'])} "
            f"| {_fmt(h.get('loss_koleo'))} | {_fmt(h.get('monitor_knn_accuracy'))} | {_fmt(h.get('monitor_nmi'))} "
            f"| {_fmt(ratio)} | {_fmt(h.get('teacher_mi'))} | {h['lr']:.2e} | {h['images_per_s']:.1f} |"
        )
    warned = sorted({w for h in r.history for w in h.get("collapse_warnings", [])})
    lines += ["", "Collapse warnings: " + ("; ".join(warned) if warned else "none.")]
    return lines


def _write_report(r: DemoResult, source: str, params: dict[str, Any], pngs: dict[str, Path], pre) -> Path:
    from .fewshot.probes import format_table

    lines = [
        "# codafeat demo report",
        "",
        f"Data: {source}.",
        "",
        "Pretraining (CPU-scale demo settings, not the paper's): "
        + ", ".join(f"`{k}={v!r}`" for k, v in params.items())
        + f"; {pre.n_images_} images of {len(pre.organs_)} organs.",
        "",
        "## Zero-shot organ separation (held-out images)",
        "",
        "| metric | Coda | random init |",
        "|---|---|---|",
    ]
    for key in ("knn_accuracy", "nmi", "ari", "silhouette"):
        lines.append(f"| {key} | {_fmt(r.separation['coda'][key])} | {_fmt(r.separation['random'][key])} |")
    if r.variants:
        lines += [
            "",
            "## Within-organ variant separation (mean over organs)",
            "",
            "| metric | Coda | random init |",
            "|---|---|---|",
        ]
        for key in ("knn_accuracy", "nmi", "ari", "silhouette"):
            lines.append(f"| {key} | {_fmt(r.variants['coda'][key])} | {_fmt(r.variants['random'][key])} |")
    lines += [
        "",
        "## Few-shot organ classification (linear probe on frozen embeddings)",
        "",
        format_table(r.few_shot),
        "",
    ]
    captions = {
        "learning_curve": "## Learning curve\n\nThe few-shot table as a figure: score against the number of labelled "
        "images (log scale), error bars over the draws.",
        "neighbours": "## Similar cases\n\nThree held-out images (first column, framed) and their nearest held-out "
        "neighbours by Coda's embeddings, nearest first, with the cosine distance and the neighbour's organ "
        "(`neighbours.html` shows the same as an offline web page).",
        "activation_maps": "## What a fine-tuned classifier looks at\n\nA `CodaClassifier` fine-tuned from these "
        "weights on the pretraining images' organs (10 epochs), and its Grad-CAM map (`explain`) over three "
        "held-out images: red regions raised the predicted organ's score most.",
    }
    embeddings = {k: p for k, p in pngs.items() if k not in captions}
    if embeddings:
        lines += ["## Embedding maps", ""]
        for name, p in embeddings.items():
            lines.append(f"![{name}]({Path(p).name})")
        lines.append("")
    for key, caption in captions.items():
        if key in pngs:
            lines += [caption, "", f"![{key}]({Path(pngs[key]).name})", ""]
    lines += _history_lines(r, params)
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in r.timings.items()), ""]
    path = r.out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
