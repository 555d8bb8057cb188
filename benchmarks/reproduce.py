"""Reproduce the Coda paper's qualitative claims at CPU scale on real radiographs (issue 6).

One command pretrains three encoders with identical settings (the ``small`` recipe of
:mod:`codafeat.recipes`) and seeds on ``<repo>/../shared/data/organs7`` (seven organs, at
most 600 images each) and evaluates them, with a random-init encoder and raw pixels as
baselines, the paper's way:

1. ``pretrain``: Coda (``lambda_inter=1, lambda_intra=1``), inter-organ only
   (``lambda_intra=0``), intra-organ only (``lambda_inter=0``) -- the paper's Table 2
   ablation -- plus the same backbone randomly initialised (the floor);
2. ``embed``: every evaluation image embedded once per encoder (``.npy`` under the output
   folder, reused by all later stages and by ``--resume``);
3. ``zeroshot`` (paper Fig. 2a): organ separation on ``organs7_eval/`` (leave-one-out kNN
   accuracy, NMI, ARI, silhouette) and a t-SNE PNG per encoder;
4. ``knee`` (paper Fig. 2b's claim of within-organ detail): few-shot KL-grade probes on
   ``knee_kl/`` (linear and kNN, several fractions and repeats);
5. ``jsrt_cls`` (paper Table 1, classification): nodule vs no nodule AUC of a linear probe
   on frozen embeddings, 1/10/20/50 % of a fixed training split, fixed test split;
6. ``seg`` (paper Table 1, segmentation): heart and clavicle (left + right clavicle merged
   into one foreground class) IoU with :class:`codafeat.segment.CodaSegmenter`, the same
   fractions and split, several seeds, each fit given the same number of optimiser steps;
7. ``results``: the sections of ``benchmarks/RESULTS.md`` owned by this script.

Each stage writes a JSON (and each pretraining its weights) under ``--out`` as soon as it
finishes; ``--resume`` skips what is already there (a pretraining interrupted mid-way
continues from its last epoch checkpoint). Nothing is tuned per encoder: all four see the
same settings, seeds, splits and probes.

Order: Coda is pretrained first and evaluated against random init (every stage, segmentation
included) before the two ablations are pretrained and evaluated, so a run cut short still
holds the main comparison. Evaluation stages cover the encoders available so far and rerun
when more become available.

Usage (the default is CPU-sized: about 40-50 minutes on 2 idle cores, an epoch of pretraining
is ~65 s there; much longer when other processes share the cores)::

    python benchmarks/reproduce.py --resume
    python benchmarks/reproduce.py --epochs 1 --max-images-per-organ 50 --seg-steps 2 \
        --seg-seeds 1 --out benchmarks/out/reproduce_tiny --no-results     # smoke test
    python benchmarks/reproduce.py --device cuda --backbone convnext_tiny --image-size 224 \
        --local-size 96 --n-local-crops 8 --epochs 100 --seg-size 256     # a GPU run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
FRACTIONS = (0.01, 0.1, 0.2, 0.5)
ENCODERS = ("coda", "inter_only", "intra_only", "random", "raw_pixels")
PRETRAINED = {"coda": (1.0, 1.0), "inter_only": (1.0, 0.0), "intra_only": (0.0, 1.0)}
LABEL = {
    "coda": "Coda (both)",
    "inter_only": "inter-organ only",
    "intra_only": "intra-organ only",
    "random": "random init",
    "raw_pixels": "raw pixels",
}
#: Baselines that need no pretraining (raw pixels: the image resized to the encoders' input and flattened).
BASELINES = ("random", "raw_pixels")
#: Pretraining parameters that the command line can override (default: the recipe's value).
PRETRAIN_KEYS = (
    "backbone",
    "image_size",
    "local_size",
    "n_local_crops",
    "batch_size",
    "epochs",
    "lr",
    "warmup_epochs",
    "head_out_dim",
    "head_hidden_dim",
    "head_bottleneck_dim",
)
SECTION_MAIN = "## Reproducing the paper at CPU scale (issue 6)"
SECTION_PRE = "## Pretraining on real radiographs (issue 3)"
SECTION_SEG = "## Segmentation with Coda weights (issue 4 benchmark)"
NOTES_BEGIN, NOTES_END = "<!-- notes -->", "<!-- /notes -->"


# ---------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = ""
    if torch.cuda.is_available():
        gpu = ", GPU " + torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rel(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it (for RESULTS.md)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def pretrain_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's settings, with the values given on the command line instead."""
    from codafeat.recipes import get_recipe

    given = {k: getattr(args, k) for k in PRETRAIN_KEYS if getattr(args, k, None) is not None}
    return get_recipe(args.recipe, **given)


def signature(args: argparse.Namespace) -> dict[str, Any]:
    """What every stage's result depends on (checked by ``--resume``)."""
    return dict(
        pretrain_settings(args),
        recipe=args.recipe,
        organs=args.organs,
        max_images_per_organ=args.max_images_per_organ,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )


class Run:
    """The output folder: stage files, resume checks, timings."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "embeddings").mkdir(exist_ok=True)
        self.sig = signature(args)
        sig_file = self.out / "signature.json"
        if sig_file.exists() and args.resume:
            old = load_json(sig_file)
            if old != json.loads(json.dumps(self.sig)):
                diff = {k: (old.get(k), v) for k, v in self.sig.items() if old.get(k) != v}
                sys.exit(f"--resume: {self.out} holds results of other settings {diff}; use another --out")
        elif sig_file.exists() and not args.resume:
            for p in (
                list(self.out.glob("*.json"))
                + list((self.out / "embeddings").glob("*.npy"))
                + list(self.out.glob("*.safetensors"))
            ):
                p.unlink()
            for ck in self.out.glob("ckpt_*/*"):
                ck.unlink()
        save_json(sig_file, self.sig)

    def path(self, name: str) -> Path:
        return self.out / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.args.resume and self.path(name).exists()


# ---------------------------------------------------------------------------- data
def find_data(root: Path, organs: str = "organs7") -> Path:
    need = [organs, f"{organs}_eval", "knee_kl", "jsrt"]
    missing = [n for n in need if not (root / n).is_dir()]
    if missing:
        sys.exit(
            f"reproduce.py: the real data is not at {root.resolve()} (missing {missing}); it is expected at "
            "<repo>/../shared/data (see its README.md), or pass --data"
        )
    return root


def pretraining_images(
    data: Path, max_per_organ: int | None, seed: int, folder: str = "organs7"
) -> tuple[list[str], np.ndarray]:
    from codafeat.data.manifest import scan_organ_folder

    paths, organs = scan_organ_folder(data / folder)
    if max_per_organ:
        rng = np.random.RandomState(seed)
        keep: list[int] = []
        for organ in np.unique(organs):
            idx = np.flatnonzero(organs == organ)
            keep += sorted(rng.choice(idx, min(max_per_organ, len(idx)), replace=False).tolist())
        keep.sort()
        paths, organs = [paths[i] for i in keep], organs[keep]
    return paths, organs


def eval_sets(data: Path, organs: str = "organs7") -> dict[str, tuple[list[str], np.ndarray]]:
    from codafeat.data.manifest import read_manifest

    return {
        "organs_eval": read_manifest(data / f"{organs}_eval" / "labels.csv", path_column="path", label_column="organ"),
        "knee_kl": read_manifest(data / "knee_kl" / "labels.csv", path_column="path", label_column="kl_grade"),
        "jsrt": read_manifest(data / "jsrt" / "labels.csv", path_column="image", label_column="nodule"),
    }


def jsrt_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test split of JSRT (stratified by nodule), shared by all stages."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def jsrt_arrays(data: Path, paths: list[str], size: int, cache: Path) -> dict[str, np.ndarray]:
    """JSRT images (float32 in [0, 1]) and heart / clavicle masks (0/1) at ``size`` px, cached as .npz."""
    file = cache / f"jsrt_{size}.npz"
    if file.exists():
        with np.load(file) as z:
            return {k: z[k] for k in z.files}
    from PIL import Image

    from codafeat.data.io import load_image

    def mask(part: str, name: str) -> np.ndarray:
        with Image.open(data / "jsrt" / "masks" / part / name) as im:
            return np.asarray(im.convert("L").resize((size, size), Image.NEAREST)) > 127

    images, heart, clav = [], [], []
    for p in paths:
        name = Path(p).name
        images.append(load_image(p, size=size))
        heart.append(mask("heart", name))
        clav.append(mask("left_clavicle", name) | mask("right_clavicle", name))
    out = {
        "images": np.stack(images).astype(np.float32),
        "heart": np.stack(heart).astype(np.uint8),
        "clavicle": np.stack(clav).astype(np.uint8),
    }
    np.savez(file, **out)
    return out


# ---------------------------------------------------------------------------- stages
def available(run: Run) -> list[str]:
    """Encoders that can be evaluated now: the pretrained ones whose weights exist, and random init."""
    done = [n for n in PRETRAINED if run.path(f"pretrain_{n}").exists() and (run.out / f"{n}.safetensors").exists()]
    return [n for n in ENCODERS if n in done or n in BASELINES]


def stale(run: Run, name: str) -> bool:
    """A stage must (re)run: no result yet, or it was computed on fewer encoders than are available now."""
    if not run.done(name):
        return True
    return load_json(run.path(name)).get("encoders") != available(run)


def stage_pretrain(run: Run, data: Path, names: tuple[str, ...] = tuple(PRETRAINED)) -> None:
    from codafeat.pretrain import CodaPretrainer

    args = run.args
    paths, organs = pretraining_images(data, args.max_images_per_organ, args.seed, args.organs)
    log(
        f"pretraining images: {len(paths)} ({ {str(k): int(v) for k, v in zip(*np.unique(organs, return_counts=True))} })"
    )
    settings = pretrain_settings(args)
    # the recipe's branch weights for Coda; an ablation sets the other branch's weight to 0
    w_inter, w_intra = settings.pop("lambda_inter", 1.0), settings.pop("lambda_intra", 1.0)
    for name in names:
        l_inter, l_intra = PRETRAINED[name][0] * w_inter, PRETRAINED[name][1] * w_intra
        stage = f"pretrain_{name}"
        weights = run.out / f"{name}.safetensors"
        if run.done(stage) and weights.exists():
            log(f"{stage}: done before ({run.path(stage)}), skipped")
            continue
        t = time.perf_counter()
        # the intra-organ branch's KoLeo term goes with that branch
        branch = {"koleo_weight": 0.0} if l_intra == 0 and "koleo_weight" in settings else {}
        pre = CodaPretrainer(
            **{**settings, **branch},
            lambda_inter=l_inter,
            lambda_intra=l_intra,
            device=args.device,
            num_workers=args.num_workers,
            cache_dir=str(run.out / "decoded_cache"),
            checkpoint_dir=str(run.out / f"ckpt_{name}"),
            resume=bool(args.resume),
            random_state=args.seed,
            verbose=0,
        )
        pre.fit(paths, organs)
        pre.save(weights)
        wall = time.perf_counter() - t
        # training time over all epochs, also when this process resumed an interrupted run
        seconds = max(wall, float(sum(h["seconds"] for h in pre.history_)))
        save_json(
            run.path(stage),
            dict(
                name=name,
                lambda_inter=l_inter,
                lambda_intra=l_intra,
                history=pre.history_,
                seconds=seconds,
                n_images=int(pre.n_images_),
                organs=list(map(str, pre.organs_)),
                weights=str(weights),
            ),
        )
        last = pre.history_[-1]
        log(
            f"{stage}: {seconds:.0f}s, final loss {last['loss']:.4f} (inter {last['loss_inter']}, intra {last['loss_intra']})"
        )


def encoder_for(run: Run, name: str):
    from codafeat.encoder import CodaEncoder

    args = run.args
    # the embedding cache keys on the weights and on each image's bytes: a rerun (or a stage
    # rerun after more encoders are pretrained) embeds each image once per encoder
    common = dict(device=args.device, num_workers=0, batch_size=64, cache=run.out / "embed_cache")
    settings = pretrain_settings(args)
    if name == "raw_pixels":
        return lambda items: raw_pixels(items, settings["image_size"])
    if name == "random":
        return CodaEncoder(
            backbone=settings["backbone"], image_size=settings["image_size"], random_state=args.seed, **common
        ).fit()
    return CodaEncoder(weights=str(run.out / f"{name}.safetensors"), **common).fit()


def raw_pixels(items: list[Any], size: int) -> np.ndarray:
    """The raw-pixel baseline: each image as the encoders see it (one channel in [0, 1], resized
    to ``size`` x ``size``), flattened."""
    from codafeat.data.io import load_image

    return np.stack([load_image(item, size=size).ravel() for item in items]).astype(np.float32)


def stage_embed(run: Run, data: Path, sets: dict, jsrt: dict[str, np.ndarray]) -> None:
    inputs = {"organs_eval": sets["organs_eval"][0], "knee_kl": sets["knee_kl"][0], "jsrt": list(jsrt["images"])}
    t0 = time.perf_counter()
    timing = load_json(run.path("embed")) if run.done("embed") else {}
    for name in available(run):
        todo = [s for s in inputs if not (run.args.resume and (run.out / "embeddings" / f"{name}_{s}.npy").exists())]
        if not todo:
            continue
        enc = encoder_for(run, name)
        for s in todo:
            t = time.perf_counter()
            E = enc(inputs[s]) if callable(enc) else enc.transform(inputs[s])
            np.save(run.out / "embeddings" / f"{name}_{s}.npy", np.asarray(E, dtype=np.float32))
            timing[f"{name}/{s}"] = time.perf_counter() - t
            log(f"embed {name} {s}: {E.shape} in {timing[f'{name}/{s}']:.1f}s")
    timing["seconds"] = timing.get("seconds", 0.0) + time.perf_counter() - t0
    save_json(run.path("embed"), timing)


def emb(run: Run, name: str, s: str) -> np.ndarray:
    return np.load(run.out / "embeddings" / f"{name}_{s}.npy")


def stage_zeroshot(run: Run, sets: dict) -> None:
    from codafeat.analysis import organ_separation, plot_embedding

    t = time.perf_counter()
    y = np.asarray(sets["organs_eval"][1])
    res: dict[str, Any] = {"metrics": {}, "png": {}, "encoders": available(run)}
    for name in available(run):
        E = emb(run, name, "organs_eval")
        res["metrics"][name] = organ_separation(E, y, n_neighbors=5, random_state=run.args.seed)
        try:
            png = plot_embedding(
                E,
                y,
                "tsne",
                run.out / f"tsne_{name}.png",
                title=f"{LABEL[name]}: t-SNE of organs_eval",
                random_state=run.args.seed,
            )
            res["png"][name] = str(png)
        except ImportError as exc:
            log(f"no t-SNE picture: {exc}")
        m = res["metrics"][name]
        log(
            f"zero-shot {name}: kNN {m['knn_accuracy']:.3f} NMI {m['nmi']:.3f} ARI {m['ari']:.3f} sil {m['silhouette']:.3f}"
        )
    res["seconds"] = time.perf_counter() - t
    save_json(run.path("zeroshot"), res)


def _report_dict(report) -> dict[str, Any]:
    return {
        "mean": report.mean(),
        "std": report.std(),
        "n_train": report.n_train,
        "scoring": report.scoring,
        "scores": {m: {c: np.asarray(v).tolist() for c, v in d.items()} for m, d in report.scores.items()},
    }


def stage_knee(run: Run, sets: dict) -> None:
    from codafeat.fewshot.probes import knn_probe, linear_probe

    t = time.perf_counter()
    y = np.asarray(sets["knee_kl"][1]).astype(int)
    res: dict[str, Any] = {"majority": float(np.bincount(y).max() / len(y)), "encoders": available(run)}
    for probe in ("linear", "knn"):
        rep = None
        for name in available(run):
            E = emb(run, name, "knee_kl")
            fn = linear_probe if probe == "linear" else knn_probe
            r = fn(
                E,
                y,
                FRACTIONS,
                n_repeats=run.args.probe_repeats,
                scoring="accuracy",
                random_state=run.args.seed,
                name=name,
            )
            rep = r if rep is None else rep + r
        res[probe] = _report_dict(rep)
        log(f"knee KL {probe} probe (accuracy):\n{rep}")
    res["seconds"] = time.perf_counter() - t
    save_json(run.path("knee"), res)


def stage_jsrt_cls(run: Run, sets: dict) -> None:
    from codafeat.fewshot.probes import linear_probe

    t = time.perf_counter()
    y = np.asarray(sets["jsrt"][1]).astype(int)
    train, test = jsrt_split(y, run.args.test_fraction, run.args.seed)
    rep = None
    for name in available(run):
        r = linear_probe(
            emb(run, name, "jsrt"),
            y,
            FRACTIONS,
            test_index=test,
            n_repeats=run.args.probe_repeats,
            scoring="roc_auc",
            random_state=run.args.seed,
            name=name,
        )
        rep = r if rep is None else rep + r
    log(f"JSRT nodule linear probe (AUC), train pool {len(train)}, test {len(test)}:\n{rep}")
    save_json(
        run.path("jsrt_cls"),
        dict(
            _report_dict(rep),
            n_train_pool=len(train),
            n_test=len(test),
            encoders=available(run),
            seconds=time.perf_counter() - t,
        ),
    )


def seg_subsets(n_train: int, seeds: int, base_seed: int) -> dict[str, list[list[int]]]:
    """Training subsets per fraction and seed (identical for every encoder and task)."""
    out = {}
    for f in FRACTIONS:
        k = max(1, int(round(f * n_train)))
        out[f"{100 * f:g}%"] = [
            sorted(
                np.random.RandomState(base_seed + 1000 * s + int(round(1000 * f)))
                .choice(n_train, k, replace=False)
                .tolist()
            )
            for s in range(seeds)
        ]
    return out


def stage_seg(run: Run, sets: dict, jsrt: dict[str, np.ndarray]) -> None:
    import torch

    from codafeat.segment import CodaSegmenter

    args = run.args
    y = np.asarray(sets["jsrt"][1]).astype(int)
    train, test = jsrt_split(y, args.test_fraction, args.seed)
    subsets = seg_subsets(len(train), args.seg_seeds, args.seed)
    X = jsrt["images"]
    for task in args.seg_tasks:
        for name in [n for n in args.seg_encoders if n in available(run)]:
            stage = f"seg_{task}_{name}"
            if run.done(stage):
                log(f"{stage}: done before, skipped")
                continue
            t = time.perf_counter()
            Y = jsrt[task]
            weights = encoder_for(run, "random") if name == "random" else str(run.out / f"{name}.safetensors")
            res: dict[str, Any] = {"iou": {}, "epochs": {}, "n_train": {}}
            for label, subs in subsets.items():
                scores = []
                for s, sub in enumerate(subs):
                    idx = train[sub]
                    steps_per_epoch = math.ceil(len(idx) / args.seg_batch_size)
                    epochs = max(1, math.ceil(args.seg_steps / steps_per_epoch))
                    seg = CodaSegmenter(
                        weights=weights,
                        image_size=args.seg_size,
                        n_classes=2,
                        epochs=epochs,
                        batch_size=args.seg_batch_size,
                        lr=args.seg_lr,
                        loss=args.seg_loss,
                        validation_fraction=0.0,
                        device=args.device,
                        random_state=args.seed + s,
                    )
                    with torch.random.fork_rng(devices=[]):
                        seg.fit(X[idx], Y[idx])
                    scores.append(seg.score(X[test], Y[test]))
                res["iou"][label] = scores
                res["epochs"][label] = epochs
                res["n_train"][label] = len(subs[0])
                log(
                    f"{stage} {label} (n={len(subs[0])}, {epochs} epochs): IoU {np.mean(scores):.3f} ± {np.std(scores):.3f}"
                )
            res.update(seconds=time.perf_counter() - t, n_test=len(test), image_size=args.seg_size)
            save_json(run.path(stage), res)


# ---------------------------------------------------------------------------- RESULTS.md
def _ms(v: list[float] | np.ndarray, pct: bool = True) -> str:
    v = np.asarray(v, dtype=float)
    k = 100.0 if pct else 1.0
    return f"{k * v.mean():.1f} ± {k * v.std():.1f}" if pct else f"{v.mean():.3f} ± {v.std():.3f}"


def _fraction_table(scores: dict[str, dict[str, list[float]]], n_train: dict[str, Any], names: list[str]) -> list[str]:
    cols = list(next(iter(scores.values())).keys())
    head = "| encoder | " + " | ".join(f"{c} (n={int(round(float(n_train[c])))})" for c in cols) + " | mean |"
    lines = [head, "|---" * (len(cols) + 2) + "|"]
    for name in names:
        if name not in scores:
            continue
        row = [_ms(scores[name][c]) for c in cols]
        mean = 100 * np.mean([np.mean(scores[name][c]) for c in cols])
        lines.append(f"| {LABEL.get(name, name)} | " + " | ".join(row) + f" | {mean:.1f} |")
    return lines


def collect(run: Run) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for p in sorted(run.out.glob("*.json")):
        if p.name != "signature.json":
            r[p.stem] = load_json(p)
    return r


def claims(r: dict[str, Any]) -> list[str]:
    """Numbers for the comparisons the paper makes, one line each (averaged over fractions)."""
    metrics: dict[str, dict[str, float]] = {}
    if "zeroshot" in r:
        for key in ("knn_accuracy", "nmi", "silhouette"):
            metrics[f"zero-shot organ {key}"] = {n: r["zeroshot"]["metrics"][n][key] for n in r["zeroshot"]["metrics"]}
    if "knee" in r:
        for probe in ("linear", "knn"):
            metrics[f"knee KL {probe} probe accuracy"] = {
                n: float(np.mean(list(d.values()))) for n, d in r["knee"][probe]["mean"].items()
            }
    if "jsrt_cls" in r:
        metrics["JSRT nodule AUC"] = {n: float(np.mean(list(d.values()))) for n, d in r["jsrt_cls"]["mean"].items()}
    for task in ("heart", "clavicle"):
        got = {
            n: float(np.mean([np.mean(v) for v in r[f"seg_{task}_{n}"]["iou"].values()]))
            for n in ENCODERS
            if f"seg_{task}_{n}" in r
        }
        if got:
            metrics[f"JSRT {task} IoU"] = got
    lines = []
    for other in ("inter_only", "intra_only", "random", "raw_pixels"):
        wins, total, diffs = 0, 0, []
        for m, d in metrics.items():
            if "coda" in d and other in d:
                total += 1
                wins += d["coda"] >= d[other]
                diffs.append(f"{m} {d['coda'] - d[other]:+.3f}")
        if total:
            lines.append(
                f"- Coda >= {LABEL[other]} on {wins} of {total} measures (Coda minus {LABEL[other]}: "
                + "; ".join(diffs)
                + ")."
            )
    return lines


def _keep_notes(old: str | None) -> str:
    if old and NOTES_BEGIN in old and NOTES_END in old:
        return old[old.index(NOTES_BEGIN) : old.index(NOTES_END) + len(NOTES_END)]
    return f"{NOTES_BEGIN}\n(Reading of the figures: to be written after the run.)\n{NOTES_END}"


def section_main(run: Run, r: dict[str, Any], old: str | None) -> str:
    a = run.args
    meta = r.get("meta", {})
    L = [SECTION_MAIN, ""]
    L += [f"Command: `{meta.get('command', '')}` (commit {meta.get('commit', '?')}; figures from `{rel(a.out)}`).", ""]
    L += [
        f"Machine: {meta.get('machine', machine())}; torch threads {a.threads}. Other jobs may have shared the cores during the run, so wall times are upper bounds.",
        "",
    ]
    s = pretrain_settings(a)
    cap = f"at most {a.max_images_per_organ} per organ, " if a.max_images_per_organ else ""
    L += [
        f"Settings, identical for all encoders (nothing tuned per encoder): pretraining on `{a.organs}/` "
        f"({cap}{meta.get('n_pretrain_images', '?')} images of 7 organs; the monitor holds out 5 % of each) with the "
        f"`{a.recipe}` recipe of `codafeat.recipes`: "
        + ", ".join(f"`{k}={v}`" for k, v in s.items())
        + f", `random_state={a.seed}`, every other CodaPretrainer parameter at its default; "
        "the ablations set the other branch's weight to 0 (inter-organ only, intra-organ only; inter-organ only "
        "also drops the intra-organ head's KoLeo term); "
        f"random init = `CodaEncoder(backbone={s['backbone']!r}, random_state={a.seed})`; raw pixels = the image "
        f"resized to {s['image_size']} px and flattened. The paper: ConvNeXt-B, 224 px, "
        "12 local crops of 96 px, 65,536-way heads, 800 epochs on 23 organs -- this is a check of trends, not levels.",
        "",
    ]
    missing = [LABEL[n] for n in PRETRAINED if f"pretrain_{n}" not in r]
    if missing:
        L += [
            f"**Not run yet: {', '.join(missing)}** (the run was stopped before their pretraining finished; "
            f"`python benchmarks/reproduce.py --resume` with the same options completes them from the checkpoints "
            f"under `{rel(a.out)}`). Their rows are absent below.",
            "",
        ]
    if "zeroshot" in r:
        z = r["zeroshot"]["metrics"]
        n_eval = next(iter(z.values()))["n_samples"]
        k_eval = next(iter(z.values()))["n_labels"]
        L += [
            f"### Zero-shot organ separation on `{a.organs}_eval/` (paper Fig. 2a)",
            "",
            f"{n_eval} held-out images of {k_eval} organs, never seen in pretraining. kNN: leave-one-out "
            f"cosine 5-NN accuracy; NMI / ARI: k-means (k={k_eval}) on L2-normalised embeddings; silhouette: cosine.",
            "",
            "| encoder | kNN accuracy | NMI | ARI | silhouette | t-SNE |",
            "|---|---|---|---|---|---|",
        ]
        for n in ENCODERS:
            if n in z:
                m = z[n]
                L.append(
                    f"| {LABEL[n]} | {m['knn_accuracy']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} | {m['silhouette']:.3f} | "
                    f"`{rel(Path(a.out) / f'tsne_{n}.png')}` (not committed) |"
                )
        L.append("")
    if "knee" in r:
        k = r["knee"]
        L += [
            "### Knee KL grade, few-shot probes on `knee_kl/` (within-organ detail, paper Fig. 2b)",
            "",
            f"500 knee radiographs, 5 KL grades; accuracy (%) on the images not drawn for training, mean ± std over "
            f"{a.probe_repeats} stratified draws per fraction (`codafeat.fewshot.probes`, same draws for every encoder). "
            f"Majority-class accuracy: {100 * k['majority']:.1f} %.",
            "",
        ]
        for probe, title in (
            ("linear", "Linear probe (standardised logistic regression)"),
            ("knn", "kNN probe (cosine, k=5)"),
        ):
            L += [f"{title}:", ""] + _fraction_table(k[probe]["scores"], k[probe]["n_train"], list(ENCODERS)) + [""]
    if "jsrt_cls" in r:
        j = r["jsrt_cls"]
        L += [
            "### JSRT nodule classification (paper Table 1 protocol)",
            "",
            f"Linear probe on frozen embeddings; AUC (%) on a fixed stratified test split of {j['n_test']} images, "
            f"training images drawn from the other {j['n_train_pool']} at 1/10/20/50 % (at least one per class), "
            f"mean ± std over {a.probe_repeats} draws. (The paper's Table 1 uses tuberculosis classification; JSRT "
            "nodules are what we have, and they are hard to see at 64 px.)",
            "",
        ]
        L += _fraction_table(j["scores"], j["n_train"], list(ENCODERS)) + [""]
    seg = [k for k in r if k.startswith("seg_")]
    if seg:
        L += [
            "### JSRT heart and clavicle segmentation",
            "",
            f'See "{SECTION_SEG[3:]}" below for the table and settings.',
            "",
        ]
    L += ["### Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    total = 0.0
    for k, v in r.items():
        if isinstance(v, dict) and "seconds" in v:
            L.append(f"| {k} | {v['seconds']:.0f} |")
            total += float(v["seconds"])
    L.append(f"| total | {total:.0f} ({total / 60:.0f} min) |")
    L += [
        "",
        "### Which of the paper's claims held at this scale",
        "",
        "Mechanical comparison, Coda against each other encoder, averaged over the fractions of each measure "
        "(positive = Coda higher; for IoU/AUC/accuracy in 0-1 units):",
        "",
    ]
    L += claims(r) + ["", _keep_notes(old), ""]
    return "\n".join(L)


def section_pretrain(run: Run, r: dict[str, Any]) -> str | None:
    runs = [n for n in PRETRAINED if f"pretrain_{n}" in r]
    if not runs:
        return None
    a = run.args
    L = [
        SECTION_PRE,
        "",
        f"`benchmarks/reproduce.py` pretrains on `../shared/data/{a.organs}` with the `{a.recipe}` recipe: "
        + ", ".join(f"`{k}={v}`" for k, v in pretrain_settings(a).items())
        + f", `random_state={a.seed}`, on {r.get('meta', {}).get('machine', machine())} (shared with other agents).",
        "",
    ]
    for n in runs:
        p = r[f"pretrain_{n}"]
        L += [
            f"{LABEL[n]} (`lambda_inter={p['lambda_inter']:g}, lambda_intra={p['lambda_intra']:g}`): {p['n_images']} images, "
            f"wall time {p['seconds']:.0f} s (sum over epochs).",
            "",
            "| epoch | loss | inter-organ | intra-organ | monitor kNN | monitor NMI | H_t / ln K | MI | lr | momentum | img/s | s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for h in p["history"]:
            f = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"  # noqa: E731
            g = lambda key, h=h: f"{h[key]:.3f}" if key in h else "-"  # noqa: E731
            ratio = f"{h['teacher_entropy'] / h['ln_k']:.3f}" if "teacher_entropy" in h else "-"
            L.append(
                f"| {h['epoch']} | {f(h['loss'])} | {f(h['loss_inter'])} | {f(h['loss_intra'])} | {g('monitor_knn_accuracy')} "
                f"| {g('monitor_nmi')} | {ratio} | {g('teacher_mi')} | {h['lr']:.2e} | "
                f"{h['momentum']:.4f} | {h['images_per_s']:.1f} | {h['seconds']:.0f} |"
            )
        L.append("")
    L += [
        "The inter-organ loss uses the paper's Eq. 1 denominator (other organs only), so it is not bounded below "
        "by 0 and goes negative once organs separate. `img/s` is the training throughput of each epoch; drops "
        "mean other processes were sharing the cores.",
        "",
    ]
    return "\n".join(L)


def section_seg(run: Run, r: dict[str, Any]) -> str | None:
    tasks = {t: {n: r[f"seg_{t}_{n}"] for n in ENCODERS if f"seg_{t}_{n}" in r} for t in ("heart", "clavicle")}
    if not any(tasks.values()):
        return None
    a = run.args
    paper = {"clavicle": "56.26 / 76.96 / 82.50 / 85.97", "heart": "67.05 / 83.75 / 88.42 / 91.13"}
    L = [
        SECTION_SEG,
        "",
        f"`benchmarks/reproduce.py`: `CodaSegmenter` (U-Net, full fine-tuning, decoder random) on JSRT images and SCR "
        f"masks downscaled to {a.seg_size} px (IoU measured at {a.seg_size} px), heart and clavicle (left + right "
        "clavicle merged into one foreground class, i.e. binary). Fixed stratified test split "
        f"({int(round(a.test_fraction * 100))} % of 247 images); training images drawn from the rest at 1/10/20/50 % "
        f"(at least one), {a.seg_seeds} seeds (different draws and initialisations), the same draws for every encoder. "
        f"Every fit gets about {a.seg_steps} optimiser steps (epochs = ceil({a.seg_steps} / steps per epoch)), batch "
        f"{a.seg_batch_size}, decoder lr {a.seg_lr:g} (encoder lr / 10), loss {a.seg_loss}, default augmentation, no validation split, "
        "no early stopping. Encoders from the CPU-scale pretraining above. Foreground IoU (%), mean ± std over seeds.",
        "",
    ]
    for t, res in tasks.items():
        if not res:
            continue
        first = next(iter(res.values()))
        L += [f"{t.capitalize()} (paper Table 1, Coda ConvNeXt-B 800 epochs, 1/10/20/50 %: {paper[t]}):", ""]
        L += _fraction_table({n: v["iou"] for n, v in res.items()}, first["n_train"], list(ENCODERS))
        L += ["", "Wall time: " + ", ".join(f"{LABEL[n]} {v['seconds']:.0f} s" for n, v in res.items()) + ".", ""]
    zeros = sum(x == 0.0 for res in tasks.values() for v in res.values() for xs in v["iou"].values() for x in xs)
    fits = sum(len(xs) for res in tasks.values() for v in res.values() for xs in v["iou"].values())
    if zeros:
        L += [
            f"{zeros} of {fits} fits scored IoU 0 (the U-Net predicted background everywhere): the fine-tuning "
            "budget (`--seg-steps`) is too small to compare encoders; read these tables as a smoke test of the "
            "protocol, not as evidence for or against pretraining.",
            "",
        ]
    return "\n".join(L)


def write_results(run: Run) -> None:
    r = collect(run)
    target = Path(run.args.results)
    text = target.read_text() if target.exists() else "# codafeat benchmark results\n"
    parts = re.split(r"(?m)^(?=## )", text)
    head, sections = parts[0], parts[1:]
    titles = [s.splitlines()[0].strip() for s in sections]
    old_main = sections[titles.index(SECTION_MAIN)] if SECTION_MAIN in titles else None
    new = {
        SECTION_MAIN: section_main(run, r, old_main),
        SECTION_PRE: section_pretrain(run, r),
        SECTION_SEG: section_seg(run, r),
    }
    for title, body in new.items():
        if body is None:
            continue
        body = body.rstrip("\n") + "\n\n"
        if title in titles:
            sections[titles.index(title)] = body
        else:
            if sections and not sections[-1].endswith("\n\n"):
                sections[-1] = sections[-1].rstrip("\n") + "\n\n"
            sections.append(body)
            titles.append(title)
    target.write_text((head + "".join(sections)).rstrip("\n") + "\n")
    log(f"wrote {target}")


# ---------------------------------------------------------------------------- main
STAGES = ("pretrain", "embed", "zeroshot", "knee", "jsrt_cls", "seg", "results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(DATA), help="the shared data folder (default <repo>/../shared/data)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "reproduce"), help="stage results, weights, PNGs")
    p.add_argument("--resume", action="store_true", help="skip stages whose results are in --out")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    p.add_argument("--results", default=str(RESULTS), help="the results file whose sections this script owns")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("pretraining (same for all encoders): the recipe, then any value given here")
    g.add_argument("--recipe", default="small", help="codafeat.recipes name (default: small)")
    g.add_argument(
        "--organs", default="organs7", help="pretraining folder under --data; <name>_eval is the zero-shot set"
    )
    for key in ("backbone",):
        g.add_argument("--" + key.replace("_", "-"), default=None)
    for key in (
        "image_size",
        "local_size",
        "n_local_crops",
        "batch_size",
        "epochs",
        "warmup_epochs",
        "head_out_dim",
        "head_hidden_dim",
        "head_bottleneck_dim",
    ):
        g.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--max-images-per-organ", type=int, default=600, help="subsample each organ (0: all)")
    g.add_argument("--num-workers", type=int, default=0)
    g = p.add_argument_group("evaluation")
    g.add_argument("--probe-repeats", type=int, default=10)
    g.add_argument("--test-fraction", type=float, default=0.4, help="JSRT fixed test split")
    # the same protocol as benchmarks/segmentation.py: with fewer steps, a lower lr or the
    # ce+dice loss the U-Net stays on the all-background prior (58/64 fits scored IoU 0)
    g.add_argument("--seg-size", type=int, default=128)
    g.add_argument("--seg-steps", type=int, default=80, help="optimiser steps per segmentation fit")
    g.add_argument("--seg-batch-size", type=int, default=4)
    g.add_argument("--seg-lr", type=float, default=1e-2, help="decoder lr (the encoder gets a tenth)")
    g.add_argument("--seg-loss", default="dice", choices=["dice", "ce", "ce+dice"])
    g.add_argument("--seg-seeds", type=int, default=2)
    g.add_argument("--seg-tasks", default="heart,clavicle")
    g.add_argument(
        "--seg-encoders", default="coda,random,inter_only,intra_only", help="raw pixels have no encoder to fine-tune"
    )
    a = p.parse_args(argv)
    a.stages = [s for s in a.stages.split(",") if s]
    bad = [s for s in a.stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {STAGES}")
    a.seg_tasks = [t for t in a.seg_tasks.split(",") if t]
    a.seg_encoders = [e for e in a.seg_encoders.split(",") if e]
    if (
        set(a.seg_tasks) - {"heart", "clavicle"}
        or set(a.seg_encoders) - set(ENCODERS)
        or "raw_pixels" in a.seg_encoders
    ):
        p.error("--seg-tasks: heart,clavicle; --seg-encoders: " + ",".join(n for n in ENCODERS if n != "raw_pixels"))
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    data = find_data(Path(args.data), args.organs)
    run = Run(args)
    cmd = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv)
    n_pre = len(pretraining_images(data, args.max_images_per_organ, args.seed, args.organs)[0])
    meta_path = run.path("meta")
    meta = load_json(meta_path) if meta_path.exists() else {}
    if "pretrain" in args.stages or "command" not in meta:  # a results-only rerun keeps the run's command
        meta.update(
            command=cmd.strip(),
            commit=git_commit(),
            machine=machine(),
            n_pretrain_images=n_pre,
            started=meta.get("started", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        )
    save_json(meta_path, meta)
    sets = eval_sets(data, args.organs)
    need_jsrt = any(s in args.stages for s in ("embed", "seg"))
    jsrt: dict[str, np.ndarray] = {}
    walls: dict[str, float] = {}
    if need_jsrt:
        t = time.perf_counter()
        jsrt = jsrt_arrays(data, sets["jsrt"][0], args.seg_size, run.out)
        walls["jsrt load"] = time.perf_counter() - t
    evaluate = [
        ("embed", lambda: stage_embed(run, data, sets, jsrt)),
        ("zeroshot", lambda: stage_zeroshot(run, sets) if stale(run, "zeroshot") else None),
        ("knee", lambda: stage_knee(run, sets) if stale(run, "knee") else None),
        ("jsrt_cls", lambda: stage_jsrt_cls(run, sets) if stale(run, "jsrt_cls") else None),
        ("results", lambda: None if args.no_results else write_results(run)),
        ("seg", lambda: stage_seg(run, sets, jsrt)),
        ("results", lambda: None if args.no_results else write_results(run)),
    ]
    # Coda and random init first (the main comparison, also issue 4's), then the two ablations.
    steps = [("pretrain", lambda: stage_pretrain(run, data, ("coda",)))] + evaluate
    steps += [("pretrain", lambda: stage_pretrain(run, data, ("inter_only", "intra_only")))] + evaluate
    for name, fn in steps:
        if name not in args.stages:
            continue
        t = time.perf_counter()
        log(f"stage {name} ...")
        fn()
        walls[name] = walls.get(name, 0.0) + time.perf_counter() - t
        log(f"stage {name}: {walls[name]:.0f}s")
    log(
        "wall time per stage: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in walls.items())
        + f"; total {sum(walls.values()):.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
