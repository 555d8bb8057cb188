"""Transfer the way the paper measures it, on every labelled dev task (issue 22, item 5).

One run pretrains (or reuses) the encoders and measures, side by side, on the dev tasks in
``<repo>/../shared/data``:

- **knee KL grade** (``knee_kl/``, 500 knees, 5 grades, accuracy; majority class 39.8 %);
- **JSRT nodules** (``jsrt/``, 247 chest radiographs, nodule or not, ROC AUC on a fixed
  stratified test split of 40 %, training images drawn from the rest).

Two protocols, at 1/10/20/50 % of the training images, with ``--draws`` stratified draws
per fraction (the same draws for every encoder):

1. ``linear``: a linear probe (standardised logistic regression, :mod:`codafeat.fewshot.probes`) on
   frozen ``CodaEncoder.transform`` output;
2. ``finetune``: the paper's protocol, :class:`codafeat.CodaClassifier` (a linear head on
   the pooled backbone, the whole network fine-tuned with the same settings for every
   encoder); raw pixels have no network and appear in the linear table only.

Encoders: Coda (both branches), inter-organ only, intra-organ only (the paper's Table 2
ablation, all pretrained here with the same recipe, seed and images as
``benchmarks/reproduce.py``: ``organs7``, at most 600 images per organ), random init, raw
pixels (the image at the encoders' input size, flattened), and any ``--extra name=weights``
(an ablation's Coda, for instance). Nothing is tuned per encoder.

Every cell (stage, encoder, task, fraction, draw) is written to ``--out`` as it finishes;
``--resume`` skips finished cells, so the run can go in the background and be restarted.
``--results`` writes the tables into ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/transfer.py --out benchmarks/out/transfer --resume            # everything
    python benchmarks/transfer.py --out benchmarks/out/transfer_kl --set koleo_weight=0.1 \\
        --variants coda --stages pretrain                                             # an ablation's Coda
    python benchmarks/transfer.py --out benchmarks/out/transfer --resume \\
        --extra coda_koleo=benchmarks/out/transfer_kl/coda.safetensors --results
    python benchmarks/transfer.py --dry-run --out /tmp/t                              # synthetic smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reproduce as rp  # noqa: E402  (shared data helpers of the reproduction)

REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
FRACTIONS = (0.01, 0.1, 0.2, 0.5)
VARIANTS = {"coda": (1.0, 1.0), "inter_only": (1.0, 0.0), "intra_only": (0.0, 1.0)}
STAGES = ("pretrain", "embed", "linear", "finetune")
TASKS = ("knee_kl", "jsrt", "shoulder")
SECTION = "## Transfer: linear probe and fine-tuning on the dev tasks (issue 22)"
log = rp.log


# ---------------------------------------------------------------------------- settings
def parse_set(items: list[str]) -> dict[str, Any]:
    """``["koleo_weight=0", "pooling=\\"avgmax\\""]`` -> a dict of JSON (or plain string) values."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def recipe_settings(args: argparse.Namespace) -> dict[str, Any]:
    from codafeat.recipes import get_recipe

    return get_recipe(args.recipe, **parse_set(args.set))


class Run:
    """The output folder: one JSON per finished cell, weights, embeddings."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        (self.out / "cells").mkdir(parents=True, exist_ok=True)
        (self.out / "embeddings").mkdir(exist_ok=True)
        self.settings = recipe_settings(args)
        # what the encoders depend on, and what the evaluation cells depend on
        sig = {
            "pretrain": json.loads(
                json.dumps(
                    dict(
                        self.settings,
                        recipe=args.recipe,
                        seed=args.seed,
                        max_images_per_organ=args.max_images_per_organ,
                    )
                )
            ),
            "eval": json.loads(
                json.dumps(
                    dict(
                        test_fraction=args.test_fraction,
                        draws=args.draws,
                        fractions=args.fractions,
                        ft=self.ft_settings(),
                    )
                )
            ),
        }
        sig_file = self.out / "signature.json"
        old = rp.load_json(sig_file) if sig_file.exists() else sig
        if "pretrain" not in old:  # the first layout: one flat dict of the pretraining settings
            old = {"pretrain": {k: v for k, v in old.items() if k not in ("test_fraction", "ft")}, "eval": None}
        for part, cells in (("pretrain", "*"), ("eval", "[lf]*")):
            if old[part] not in (None, sig[part]):
                if args.resume:
                    diff = {k: (old[part].get(k), v) for k, v in sig[part].items() if old[part].get(k) != v}
                    raise SystemExit(
                        f"--resume: {self.out} holds {part} results of other settings {diff}; use another --out"
                    )
                for p in self.out.glob(f"cells/{cells}.json"):
                    p.unlink()
        rp.save_json(sig_file, sig)

    def ft_settings(self) -> dict[str, Any]:
        a = self.args
        return dict(
            steps=a.ft_steps,
            lr=a.ft_lr,
            encoder_lr_factor=a.ft_encoder_lr_factor,
            batch_size=a.ft_batch_size,
            lp_fraction=a.ft_lp_fraction,
            weight_decay=a.ft_weight_decay,
        )

    def cell(self, *parts: Any) -> Path:
        return self.out / "cells" / ("__".join(str(p) for p in parts) + ".json")

    def done(self, *parts: Any) -> bool:
        return self.args.resume and self.cell(*parts).exists()

    def weights(self, name: str) -> str | None:
        """Weights of an encoder: a pretrained variant, an ``--extra`` file, or None (random init / pixels)."""
        name = name.split("@")[0]
        extra = dict(e.split("=", 1) for e in self.args.extra)
        if name in extra:
            return extra[name]
        if name in VARIANTS:
            return str(self.out / f"{name}.safetensors")
        return None

    def encoders(self) -> list[str]:
        """Encoders to evaluate: the pretrained variants whose weights exist, the extras, the baselines."""
        names = [n for n in self.args.variants if Path(self.weights(n)).exists()]
        names += [e.split("=", 1)[0] for e in self.args.extra]
        tag = self.tag()
        return [f"{n}@{tag}" if tag else n for n in [*names, "random"]] + (
            [f"raw_pixels@{self.args.eval_size}px"] if self.args.eval_size else ["raw_pixels"]
        )

    def tag(self) -> str:
        """What the evaluation changes for every encoder alike (pooling, input side), as a name suffix."""
        parts = [self.args.pooling or "", f"{self.args.eval_size}px" if self.args.eval_size else ""]
        return "+".join(p for p in parts if p)

    def eval_size(self) -> int:
        return int(self.args.eval_size or self.settings["image_size"])


# ---------------------------------------------------------------------------- pretraining
def stage_pretrain(run: Run, data: Path) -> None:
    from codafeat.pretrain import CodaPretrainer

    args = run.args
    paths, organs = rp.pretraining_images(data, args.max_images_per_organ, args.seed, "organs7")
    log(f"pretraining images: {len(paths)}")
    settings = dict(run.settings)
    w_inter, w_intra = settings.pop("lambda_inter", 1.0), settings.pop("lambda_intra", 1.0)
    for name in args.variants:
        weights = Path(run.weights(name))
        if args.resume and weights.exists() and run.cell("pretrain", name).exists():
            log(f"pretrain {name}: done before, skipped")
            continue
        l_inter, l_intra = VARIANTS[name][0] * w_inter, VARIANTS[name][1] * w_intra
        branch = {"koleo_weight": 0.0} if l_intra == 0 else {}  # the KoLeo term belongs to the intra-organ branch
        t = time.perf_counter()
        pre = CodaPretrainer(
            **{**settings, **branch},
            lambda_inter=l_inter,
            lambda_intra=l_intra,
            device=args.device,
            cache_dir=str(run.out / "decoded_cache"),
            checkpoint_dir=str(run.out / f"ckpt_{name}"),
            resume=True,
            random_state=args.seed,
        )
        pre.fit(paths, organs)
        pre.save(weights)
        seconds = max(time.perf_counter() - t, float(sum(h["seconds"] for h in pre.history_)))
        rp.save_json(
            run.cell("pretrain", name),
            dict(
                history=pre.history_,
                seconds=seconds,
                lambda_inter=l_inter,
                lambda_intra=l_intra,
                settings={**settings, **branch},
            ),
        )
        last = pre.history_[-1]
        log(
            f"pretrain {name}: {seconds:.0f}s, loss {last['loss']:.3f} (inter {last['loss_inter']}, intra {last['loss_intra']})"
        )


# ---------------------------------------------------------------------------- tasks and draws
def load_tasks(data: Path, args: argparse.Namespace, size: int | None = None) -> dict[str, dict[str, Any]]:
    """Each task's images (decoded once at the encoders' input side), labels, scoring and draws."""
    from codafeat.data.io import load_image

    size = size or recipe_settings(args)["image_size"]
    sets = rp.eval_sets(data)
    sets["shoulder"] = shoulder_makers(data)
    scoring = {"knee_kl": "accuracy", "jsrt": "roc_auc", "shoulder": "balanced_accuracy"}
    out = {}
    for name in args.tasks:
        paths, labels = sets[name]
        cache = Path(args.out) / f"{name}_{size}.npy"
        if cache.exists():
            X = np.load(cache)
        else:
            X = np.stack([load_image(p, size=size) for p in paths]).astype(np.float32)
            np.save(cache, X)
        y = np.unique(labels, return_inverse=True)[1] if name == "shoulder" else np.asarray(labels).astype(int)
        out[name] = make_task(X, y, scoring[name], args)
    return out


def shoulder_makers(data: Path) -> tuple[list[str], np.ndarray]:
    """A within-organ task from the *training* images: the maker of the shoulder prosthesis.

    ``organs7/shoulder`` names each file ``shoulderimpl_<split>_<Maker>.<n>.jpg`` (Cofield 83,
    Depuy 294, Tornier 71, Zimmer 52). The encoders saw these images in pretraining, without
    these labels: the probe asks whether the features keep the fine differences between
    implants of one organ, the kind of detail a disease task needs.
    """
    import re

    paths = sorted(str(p) for p in (data / "organs7" / "shoulder").iterdir() if p.suffix.lower() == ".jpg")
    makers = [re.match(r"shoulderimpl_[a-z]+_([A-Za-z]+)\.", Path(p).name).group(1) for p in paths]
    return paths, np.asarray(makers)


def make_task(X: np.ndarray, y: np.ndarray, scoring: str, args: argparse.Namespace) -> dict[str, Any]:
    """A fixed stratified test split and, per fraction, ``--draws`` stratified training draws from the rest."""
    from codafeat import FewShotSplit

    _, test = rp.jsrt_split(y, args.test_fraction, args.seed)
    draws = {}
    for f in args.fractions:
        cv = FewShotSplit(fraction=f, n_repeats=args.draws, test_index=test, random_state=args.seed)
        draws[f"{100 * f:g}%"] = [train for train, _ in cv.split(X, y)]
    return dict(X=X, y=y, scoring=scoring, test=test, draws=draws)


def score(scoring: str, y: np.ndarray, model: Any, X: Any) -> float:
    from sklearn.metrics import get_scorer

    return float(get_scorer(scoring)(model, X, y))


# ---------------------------------------------------------------------------- encoders
def embed_fn(run: Run, name: str):
    """``f(X) -> embeddings``: a CodaEncoder's transform, or the flattened pixels."""
    from codafeat import CodaEncoder

    common = dict(
        device=run.args.device, num_workers=0, batch_size=64, pooling=run.args.pooling, image_size=run.eval_size()
    )
    if name.split("@")[0] == "raw_pixels":
        return lambda X: X.reshape(len(X), -1)
    if name.split("@")[0] == "random":
        return CodaEncoder(backbone=run.settings["backbone"], random_state=run.args.seed, **common).fit().transform
    return CodaEncoder(weights=run.weights(name), **common).fit().transform


def stage_embed(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    for name in run.encoders():
        fn = None
        for task, t in tasks.items():
            file = run.out / "embeddings" / f"{name}__{task}.npy"
            if run.args.resume and file.exists():
                continue
            fn = fn or embed_fn(run, name)
            np.save(file, np.asarray(fn(t["X"]), dtype=np.float32))
            log(f"embedded {task} with {name}")


def stage_linear(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    """Standardised logistic regression on frozen embeddings, the same draws as fine-tuning."""
    from codafeat.fewshot.probes import make_linear_probe

    for name in run.encoders():
        for task, t in tasks.items():
            if run.done("linear", name, task):
                continue
            E = np.load(run.out / "embeddings" / f"{name}__{task}.npy")
            res = {}
            for frac, draws in t["draws"].items():
                res[frac] = [
                    score(t["scoring"], t["y"][t["test"]], make_linear_probe().fit(E[tr], t["y"][tr]), E[t["test"]])
                    for tr in draws
                ]
            rp.save_json(
                run.cell("linear", name, task), dict(scores=res, n_train={f: len(d[0]) for f, d in t["draws"].items()})
            )
            log(f"linear {name} {task}: " + ", ".join(f"{f} {np.mean(v):.3f}" for f, v in res.items()))


def ft_weights(run: Run, name: str) -> Any:
    if name.split("@")[0] == "random":
        from codafeat import CodaEncoder

        s = run.settings
        return CodaEncoder(backbone=s["backbone"], image_size=s["image_size"], random_state=run.args.seed).fit()
    return run.weights(name)


def stage_finetune(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    """CodaClassifier (linear head, whole network fine-tuned), the same settings for every encoder."""
    from codafeat import CodaClassifier

    a = run.args
    names = [n for n in run.encoders() if not n.startswith("raw_pixels")]
    if a.ft_encoders:  # these, in this order
        tag = run.tag()
        names = [n for n in (f"{e}@{tag}" if tag else e for e in a.ft_encoders.split(",")) if n in names]
    for name in names:
        weights = ft_weights(run, name)
        for task, t in tasks.items():
            for frac, draws in t["draws"].items():
                for d, tr in enumerate(draws):
                    if run.done("finetune", name, task, frac, d):
                        continue
                    t0 = time.perf_counter()
                    epochs = max(
                        1, math.ceil(a.ft_steps / math.ceil(len(tr) / a.ft_batch_size))
                    )  # same steps for every fit
                    clf = CodaClassifier(
                        weights=weights,
                        epochs=epochs,
                        lp_epochs=round(a.ft_lp_fraction * epochs),
                        lr=a.ft_lr,
                        encoder_lr_factor=a.ft_encoder_lr_factor,
                        batch_size=a.ft_batch_size,
                        weight_decay=a.ft_weight_decay,
                        device=a.device,
                        num_workers=0,
                        random_state=a.seed + d,
                        pooling=a.pooling,
                        image_size=run.eval_size(),
                    ).fit(t["X"][tr], t["y"][tr])
                    value = score(t["scoring"], t["y"][t["test"]], clf, t["X"][t["test"]])
                    rp.save_json(
                        run.cell("finetune", name, task, frac, d),
                        dict(
                            score=value,
                            n_train=len(tr),
                            seconds=time.perf_counter() - t0,
                            train_loss=clf.history_[-1]["train_loss"],
                        ),
                    )
                    log(f"finetune {name} {task} {frac} draw {d}: {value:.3f} ({time.perf_counter() - t0:.1f}s)")


STAGE_FN = {"embed": stage_embed, "linear": stage_linear, "finetune": stage_finetune}


# ---------------------------------------------------------------------------- RESULTS.md
LABEL = {
    "coda": "Coda (both)",
    "inter_only": "inter-organ only",
    "intra_only": "intra-organ only",
    "random": "random init",
    "raw_pixels": "raw pixels",
    "coda_koleo": "Coda, koleo_weight=0.1 (the previous recipe)",
}
TASK_TEXT = {
    "knee_kl": ("Knee KL grade", "accuracy (%)"),
    "jsrt": ("JSRT nodules", "ROC AUC (%)"),
    "shoulder": ("Shoulder implant maker (training images, labels unseen in pretraining)", "balanced accuracy (%)"),
}
NOTES = ("<!-- transfer-notes -->", "<!-- /transfer-notes -->")


def collect(run: Run) -> dict[str, Any]:
    """``{protocol: {task: {encoder: {fraction: [scores]}}}}`` and ``n_train`` from the cells on disk."""
    out: dict[str, Any] = {"linear": {}, "finetune": {}, "n_train": {}, "seconds": {}}
    for cell in sorted((run.out / "cells").glob("*.json")):
        parts = cell.stem.split("__")
        r = rp.load_json(cell)
        out["seconds"][parts[0]] = out["seconds"].get(parts[0], 0.0) + float(r.get("seconds", 0.0))
        if parts[0] == "linear":
            out["linear"].setdefault(parts[2], {})[parts[1]] = r["scores"]
            out["n_train"].setdefault(parts[2], {}).update(r["n_train"])
        elif parts[0] == "finetune":
            _, name, task, frac, _draw = parts
            out["finetune"].setdefault(task, {}).setdefault(name, {}).setdefault(frac, []).append(r["score"])
    return out


def _table(scores: dict[str, dict[str, list[float]]], n_train: dict[str, int], order: list[str]) -> list[str]:
    fracs = list(n_train)
    lines = [
        "| encoder | " + " | ".join(f"{f} (n={n_train.get(f, '?')})" for f in fracs) + " | mean |",
        "|---" * (len(fracs) + 2) + "|",
    ]
    for name in [n for n in order if n in scores]:
        cells, means = [], []
        for f in fracs:
            v = np.asarray(scores[name].get(f, []), dtype=float)
            cells.append(f"{100 * v.mean():.1f} ± {100 * v.std():.1f}" if len(v) else "-")
            means.append(v.mean() if len(v) else np.nan)
        base, _, tag = name.partition("@")
        label = LABEL.get(base, base) + (f" ({tag.replace('+', ', ')})" if tag else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * np.nanmean(means):.1f} |")
    return lines


def section(run: Run, old: str | None) -> str:
    r = collect(run)
    meta = rp.load_json(run.out / "meta.json") if (run.out / "meta.json").exists() else {}
    order = [*run.args.variants, *[e.split("=", 1)[0] for e in run.args.extra], "random"]
    tags = sorted({c.stem.split("__")[1].partition("@")[2] for c in (run.out / "cells").glob("*__*.json")})
    order = [f"{n}@{t}".rstrip("@") for t in tags for n in [*order, "raw_pixels"]]
    commands = meta.get("commands") or [meta.get("command", "?")]
    lines = [
        SECTION,
        "",
        f"Commands (in this order; finished cells are kept, `--resume` skips them; commit {meta.get('commit', '?')}):",
        "",
        "```",
        *commands,
        "```",
        "",
        f"Machine: {meta.get('machine', '?')}. Seconds in the cells: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["seconds"].items()))
        + (f"; wall time: {meta['wall']}" if meta.get("wall") else "")
        + ".",
        "",
        "Encoders pretrained with the recipe `"
        + run.args.recipe
        + "`"
        + (" plus " + ", ".join(f"`{x}`" for x in run.args.set) if run.args.set else "")
        + ": "
        + ", ".join(f"`{k}={v}`" for k, v in run.settings.items())
        + f", `random_state={run.args.seed}`, on "
        f"`organs7/` (at most {run.args.max_images_per_organ} images per organ); the single-branch encoders set the "
        "other branch's weight to 0 (and the KoLeo term with the intra-organ branch). Extra encoders: "
        + (", ".join(f"`{e}`" for e in run.args.extra) or "none")
        + ".",
        "",
        f"Protocol: a fixed stratified test split ({100 * run.args.test_fraction:g} %) per task; training images drawn "
        f"from the rest at each fraction ({run.args.draws} stratified draws, the same for every encoder and both "
        "protocols). Linear: standardised logistic regression on frozen embeddings. Fine-tuning: `CodaClassifier` "
        "(linear head, whole network), "
        + ", ".join(f"`{k}={v}`" for k, v in run.ft_settings().items())
        + " (epochs = steps / batches per epoch), augmentation on, the same for every encoder.",
        "",
    ]
    for task, (title, unit) in TASK_TEXT.items():
        if task not in r["linear"]:
            continue
        lines += [f"### {title}, {unit}, mean ± std over draws", "", "Linear probe:", ""]
        lines += _table(r["linear"][task], r["n_train"][task], order)
        if task in r["finetune"]:
            lines += ["", "Fine-tuning:", ""] + _table(r["finetune"][task], r["n_train"][task], order)
        lines.append("")
    notes = NOTES[0] + "\n(no reading yet)\n" + NOTES[1]
    if old and NOTES[0] in old:
        notes = old[old.index(NOTES[0]) : old.index(NOTES[1]) + len(NOTES[1])]
    return "\n".join(lines + [notes, ""])


def write_results(run: Run, file: Path) -> None:
    text = file.read_text() if file.exists() else "# codafeat benchmark results\n"
    start = text.find(SECTION)
    old = None
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        old, text = text[start:end], text[:start] + "\x00" + text[end:]
    else:
        first = text.find("\n## ")
        text = text + "\n\x00" if first < 0 else text[: first + 1] + "\x00\n" + text[first + 1 :]
    file.write_text(text.replace("\x00", section(run, old)))
    log(f"wrote {file}")


# ---------------------------------------------------------------------------- dry run
def dry_run(args: argparse.Namespace) -> int:
    """Everything on synthetic phantoms with a tiny backbone: the code paths, not the figures."""
    from PIL import Image

    from codafeat.phantoms import make_radiograph_phantoms

    out = Path(args.out)
    X, organs = make_radiograph_phantoms(
        8, organs=("chest", "hand", "knee"), image_size=48, random_state=0, return_variants=False
    )
    for i, (img, organ) in enumerate(zip(X, organs)):
        (out / "data" / "organs7" / str(organ)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(img) * 255).astype(np.uint8)).save(
            out / "data" / "organs7" / str(organ) / f"{i:03d}.png"
        )
    args.set += [
        'backbone="test_convnext"',
        "image_size=32",
        "local_size=32",
        "n_local_crops=2",
        "head_out_dim=64",
        "head_hidden_dim=32",
        "head_bottleneck_dim=16",
        "batch_size=8",
        "epochs=1",
    ]
    args.draws, args.ft_steps, args.max_images_per_organ, args.fractions = 1, 2, 0, [0.1, 0.5]
    run = Run(args)
    stage_pretrain(run, out / "data")
    Xt, yt = make_radiograph_phantoms(
        48, organs=("chest", "hand"), image_size=32, random_state=1, return_variants=False
    )
    Xt = np.asarray(Xt, dtype=np.float32)
    tasks = {
        "knee_kl": make_task(Xt, np.arange(len(Xt)) % 3, "accuracy", args),
        "jsrt": make_task(Xt, (np.asarray(yt) == "hand").astype(int), "roc_auc", args),
    }
    for stage in ("embed", "linear", "finetune"):
        STAGE_FN[stage](run, tasks)
    rp.save_json(
        run.out / "meta.json",
        dict(commands=["python benchmarks/transfer.py --dry-run"], machine=rp.machine(), commit=rp.git_commit()),
    )
    write_results(run, Path(args.results_file))
    return 0


# ---------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(rp.DATA), help="the shared data folder (default <repo>/../shared/data)")
    p.add_argument("--out", default=str(HERE / "out" / "transfer"))
    p.add_argument("--resume", action="store_true", help="skip finished cells")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--results", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    p.add_argument("--results-file", default=str(RESULTS))
    p.add_argument("--dry-run", action="store_true", help="synthetic tasks and tiny settings: a smoke test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("encoders")
    g.add_argument("--recipe", default="small")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CodaPretrainer parameter on top of the recipe (JSON value), repeatable",
    )
    g.add_argument("--variants", default=",".join(VARIANTS), help="pretrained encoders: coda,inter_only,intra_only")
    g.add_argument("--extra", action="append", default=[], metavar="NAME=WEIGHTS", help="more encoders to evaluate")
    g.add_argument("--max-images-per-organ", type=int, default=600)
    g.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="input side of every encoder, raw pixels and fine-tuning (default: the recipe's image_size)",
    )
    g.add_argument(
        "--pooling",
        default=None,
        choices=("avg", "max", "avgmax"),
        help="global pooling of every encoder (default: each weights' own); names get '@<pooling>'",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--tasks", default=",".join(TASKS), help="knee_kl, jsrt (dev folders), shoulder (organs7/shoulder's makers)"
    )
    g.add_argument("--draws", type=int, default=5, help="stratified draws per fraction")
    g.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS), help="of the training pool")
    g.add_argument("--test-fraction", type=float, default=0.4, help="fixed test split of each task")
    g.add_argument("--ft-steps", type=int, default=100, help="optimiser steps of every fine-tuning fit")
    g.add_argument(
        "--ft-lp-fraction",
        type=float,
        default=0.0,
        help="share of the epochs spent as a linear probe first (LP-FT); 0 = the paper's plain fine-tuning",
    )
    g.add_argument("--ft-lr", type=float, default=1e-3, help="head learning rate")
    g.add_argument("--ft-encoder-lr-factor", type=float, default=0.1)
    g.add_argument("--ft-batch-size", type=int, default=32)
    g.add_argument("--ft-weight-decay", type=float, default=1e-4)
    g.add_argument("--ft-encoders", default="", help="fine-tune only these encoders (default: all but raw pixels)")
    a = p.parse_args(argv)
    a.stages = [s for s in a.stages.split(",") if s]
    a.variants = [v for v in a.variants.split(",") if v]
    a.tasks = [t for t in a.tasks.split(",") if t]
    a.fractions = [float(f) for f in a.fractions.split(",") if f]
    bad = [s for s in a.stages if s not in STAGES] + [v for v in a.variants if v not in VARIANTS]
    bad += [t for t in a.tasks if t not in TASKS]
    if bad:
        p.error(f"unknown stage, variant or task {bad}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.dry_run:
        return dry_run(args)
    data = Path(args.data)
    run = Run(args)
    t0 = time.perf_counter()
    if "pretrain" in args.stages:
        stage_pretrain(run, data)
    tasks = load_tasks(data, args, run.eval_size()) if set(args.stages) - {"pretrain"} else {}
    for stage in ("embed", "linear", "finetune"):
        if stage in args.stages:
            t = time.perf_counter()
            STAGE_FN[stage](run, tasks)
            log(f"stage {stage}: {time.perf_counter() - t:.0f}s")
    meta = rp.load_json(run.out / "meta.json") if (run.out / "meta.json").exists() else {}
    meta.setdefault("seconds", {})
    command = "python benchmarks/transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if set(args.stages) - {"pretrain"} or not args.resume:  # a results-only rerun is not a command of the run
        meta["commands"] = [c for c in meta.get("commands", []) if c != command] + [command]
    meta.update(machine=rp.machine(), commit=rp.git_commit())
    meta["seconds"]["last_run"] = time.perf_counter() - t0
    rp.save_json(run.out / "meta.json", meta)
    if args.results:
        write_results(run, Path(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
