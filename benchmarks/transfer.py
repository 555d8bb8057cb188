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
STAGES = ("pretrain", "embed", "linear", "finetune", "segment")
#: Every task: its kind (what is trained on it) and its score. The dev suite (issue 30) is
#: nih_pneumonia, boneage, heart and clavicle; knee_kl and jsrt (nodules) are control rows
#: (no signal at 64 px for any representation), shoulder a within-organ task of the training images.
TASK_KIND = {
    "nih_pneumonia": ("classification", "roc_auc"),
    "boneage": ("regression", "mae"),
    "heart": ("segmentation", "iou"),
    "clavicle": ("segmentation", "iou"),
    "knee_kl": ("classification", "accuracy"),
    "jsrt": ("classification", "roc_auc"),
    "shoulder": ("classification", "balanced_accuracy"),
}
TASKS = tuple(TASK_KIND)
DEV_TASKS = ("nih_pneumonia", "boneage", "heart", "clavicle", "knee_kl", "jsrt")
SECTION = "## Transfer, round 2: the dev suite, frozen and fine-tuned (issue 30)"
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
                        seg=dict(size=args.seg_size, steps=args.seg_steps, batch=args.seg_batch_size, lr=args.seg_lr),
                    )
                )
            ),
        }
        sig_file = self.out / "signature.json"
        old = rp.load_json(sig_file) if sig_file.exists() else sig
        if "pretrain" not in old:  # the first layout: one flat dict of the pretraining settings
            old = {"pretrain": {k: v for k, v in old.items() if k not in ("test_fraction", "ft")}, "eval": None}
        for part, cells in (("pretrain", "*"), ("eval", "[lfs]*")):
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
        a = self.args
        layout = (a.features or "") + (str(a.grid_size) if a.features == "grid" and a.grid_size else "")
        parts = [a.pooling or "", layout, f"{a.eval_size}px" if a.eval_size else ""]
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
    """Each task's images (decoded once at the encoders' input side; masks at ``--seg-size``), targets, draws."""
    from codafeat.data.io import load_image

    size = size or recipe_settings(args)["image_size"]
    out = {}
    for name in args.tasks:
        kind, scoring = TASK_KIND[name]
        if kind == "segmentation":
            out[name] = seg_task(data, name, args)
            continue
        paths, y, groups = task_files(data, name)
        cache = Path(args.out) / f"{name}_{size}.npy"
        if cache.exists():
            X = np.load(cache)
        else:
            X = np.stack([load_image(p, size=size) for p in paths]).astype(np.float32)
            np.save(cache, X)
        out[name] = make_task(X, y, scoring, args, kind=kind, groups=groups)
    return out


def task_files(data: Path, name: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """``(paths, targets, groups)`` of a classification or regression task (groups: patients, or None)."""
    import csv

    if name == "shoulder":
        paths, makers = shoulder_makers(data)
        return paths, np.unique(makers, return_inverse=True)[1], None
    if name in ("nih_pneumonia", "boneage"):
        with open(data / name / "labels.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        paths = [str(data / name / r["path"]) for r in rows]
        if name == "boneage":
            return paths, np.array([float(r["boneage_months"]) for r in rows]), None
        y = np.array([int(r["label"] == "Pneumonia") for r in rows])
        return paths, y, np.array([r["patient"] for r in rows])
    paths, labels = rp.eval_sets(data)[name]
    return paths, np.asarray(labels).astype(int), None


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


def strata(y: np.ndarray, kind: str, bins: int = 5) -> np.ndarray:
    """Labels to stratify by: the classes, or quantile bins of a continuous target."""
    if kind != "regression":
        return y
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.digitize(y, edges)


def fixed_test_split(y: np.ndarray, groups: np.ndarray | None, test_fraction: float, seed: int) -> np.ndarray:
    """The fixed test positions of a task: stratified, and whole groups (patients) when given."""
    if groups is None:
        return rp.jsrt_split(y, test_fraction, seed)[1]
    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, round(1 / test_fraction))
    folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))
    n_test = max(1, round(test_fraction * k))  # 40 %: 2 of 5 folds
    return np.sort(np.concatenate([test for _, test in folds[:n_test]]))


def make_task(
    X: np.ndarray,
    y: np.ndarray,
    scoring: str,
    args: argparse.Namespace,
    *,
    kind: str = "classification",
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """A fixed stratified (and, with ``groups``, patient-grouped) test split and, per fraction, ``--draws``
    stratified training draws from the rest (continuous targets stratified by quantile bins)."""
    from codafeat import FewShotSplit

    s = strata(y, kind)
    test = fixed_test_split(s, groups, args.test_fraction, args.seed)
    draws = {}
    for f in args.fractions:
        cv = FewShotSplit(fraction=f, n_repeats=args.draws, test_index=test, random_state=args.seed)
        draws[f"{100 * f:g}%"] = [train for train, _ in cv.split(X, s, groups)]
    return dict(X=X, y=y, kind=kind, scoring=scoring, test=test, draws=draws)


def seg_task(data: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """JSRT heart or clavicle masks: the nodule split's test images, random training subsets per fraction."""
    paths, nodule = rp.eval_sets(data)["jsrt"]
    arrays = rp.jsrt_arrays(data, paths, args.seg_size, Path(args.out))
    test = fixed_test_split(np.asarray(nodule).astype(int), None, args.test_fraction, args.seed)
    pool = np.setdiff1d(np.arange(len(paths)), test)
    draws = {}
    for f in args.fractions:
        k = max(1, round(f * len(pool)))
        rng = np.random.RandomState(args.seed + int(round(1000 * f)))
        draws[f"{100 * f:g}%"] = [np.sort(rng.choice(pool, k, replace=False)) for _ in range(args.draws)]
    return dict(X=arrays["images"], y=arrays[name], kind="segmentation", scoring="iou", test=test, draws=draws)


def score(scoring: str, y: np.ndarray, model: Any, X: Any) -> float:
    """The task's score of a fitted model; ``"mae"`` is the mean absolute error (lower is better)."""
    from sklearn.metrics import get_scorer, mean_absolute_error

    if scoring == "mae":
        return float(mean_absolute_error(y, model.predict(X)))
    return float(get_scorer(scoring)(model, X, y))


def linear_probe(kind: str) -> Any:
    """The frozen-feature probe of a task kind, the same for every encoder: a standardised logistic
    regression, or a standardised ridge regression whose penalty is chosen by leave-one-out CV
    inside the training draw (a fixed grid)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from codafeat.fewshot.probes import make_linear_probe

    if kind == "regression":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    return make_linear_probe()


def eval_tasks(tasks: dict[str, dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {k: t for k, t in tasks.items() if t["kind"] in kinds}


# ---------------------------------------------------------------------------- encoders
def encoder_settings(run: Run) -> dict[str, Any]:
    """What every CodaEncoder of the evaluation shares (the input side, pooling and feature layout)."""
    a = run.args
    return dict(
        device=a.device,
        num_workers=0,
        batch_size=64,
        pooling=a.pooling,
        features=a.features,
        grid_size=a.grid_size,
        image_size=run.eval_size(),
    )


def embed_fn(run: Run, name: str):
    """``f(X) -> embeddings``: a CodaEncoder's transform, or the flattened pixels."""
    from codafeat import CodaEncoder

    common = encoder_settings(run)
    if name.split("@")[0] == "raw_pixels":
        return lambda X: X.reshape(len(X), -1)
    if name.split("@")[0] == "random":
        return CodaEncoder(backbone=run.settings["backbone"], random_state=run.args.seed, **common).fit().transform
    return CodaEncoder(weights=run.weights(name), **common).fit().transform


def stage_embed(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    for name in run.encoders():
        fn = None
        for task, t in eval_tasks(tasks, "classification", "regression").items():
            file = run.out / "embeddings" / f"{name}__{task}.npy"
            if run.args.resume and file.exists():
                continue
            fn = fn or embed_fn(run, name)
            np.save(file, np.asarray(fn(t["X"]), dtype=np.float32))
            log(f"embedded {task} with {name}")


def stage_linear(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    """A standardised linear probe on frozen embeddings (:func:`linear_probe`), the same draws as fine-tuning;
    regression tasks also score predicting the training draw's mean."""
    from sklearn.dummy import DummyRegressor

    for name in run.encoders():
        for task, t in eval_tasks(tasks, "classification", "regression").items():
            if run.done("linear", name, task):
                continue
            E = np.load(run.out / "embeddings" / f"{name}__{task}.npy")
            res = {}
            for frac, draws in t["draws"].items():
                res[frac] = [
                    score(t["scoring"], t["y"][t["test"]], linear_probe(t["kind"]).fit(E[tr], t["y"][tr]), E[t["test"]])
                    for tr in draws
                ]
            rp.save_json(
                run.cell("linear", name, task), dict(scores=res, n_train={f: len(d[0]) for f, d in t["draws"].items()})
            )
            log(f"linear {name} {task}: " + ", ".join(f"{f} {np.mean(v):.3f}" for f, v in res.items()))
    for task, t in eval_tasks(tasks, "regression").items():
        res = {
            frac: [
                score("mae", t["y"][t["test"]], DummyRegressor().fit(t["X"][tr], t["y"][tr]), t["X"][t["test"]])
                for tr in draws
            ]
            for frac, draws in t["draws"].items()
        }
        rp.save_json(
            run.cell("linear", "mean", task), dict(scores=res, n_train={f: len(d[0]) for f, d in t["draws"].items()})
        )


def ft_weights(run: Run, name: str) -> Any:
    if name.split("@")[0] == "random":
        from codafeat import CodaEncoder

        s = run.settings
        return CodaEncoder(backbone=s["backbone"], image_size=s["image_size"], random_state=run.args.seed).fit()
    return run.weights(name)


def ft_names(run: Run) -> list[str]:
    """Encoders to fine-tune: every network (not raw pixels), or ``--ft-encoders`` in that order."""
    names = [n for n in run.encoders() if not n.startswith("raw_pixels")]
    if run.args.ft_encoders:
        tag = run.tag()
        names = [n for n in (f"{e}@{tag}" if tag else e for e in run.args.ft_encoders.split(",")) if n in names]
    return names


def stage_finetune(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    """CodaClassifier / CodaRegressor (linear head, whole network fine-tuned), the same settings for every encoder;
    the first ``--ft-draws`` draws of each fraction."""
    from codafeat import CodaClassifier, CodaRegressor

    a = run.args
    for name in ft_names(run):
        weights = ft_weights(run, name)
        for task, t in eval_tasks(tasks, "classification", "regression").items():
            for frac, draws in t["draws"].items():
                for d, tr in enumerate(draws[: a.ft_draws]):
                    if run.done("finetune", name, task, frac, d):
                        continue
                    t0 = time.perf_counter()
                    epochs = max(
                        1, math.ceil(a.ft_steps / math.ceil(len(tr) / a.ft_batch_size))
                    )  # same steps for every fit
                    est = CodaRegressor if t["kind"] == "regression" else CodaClassifier
                    model = est(
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
                    value = score(t["scoring"], t["y"][t["test"]], model, t["X"][t["test"]])
                    rp.save_json(
                        run.cell("finetune", name, task, frac, d),
                        dict(
                            score=value,
                            n_train=len(tr),
                            seconds=time.perf_counter() - t0,
                            train_loss=model.history_[-1]["train_loss"],
                        ),
                    )
                    log(f"finetune {name} {task} {frac} draw {d}: {value:.3f} ({time.perf_counter() - t0:.1f}s)")


def stage_segment(run: Run, tasks: dict[str, dict[str, Any]]) -> None:
    """CodaSegmenter (U-Net on the pretrained encoder, random decoder) on JSRT heart and clavicle, the settings
    of benchmarks/reproduce.py's segmentation stage (the same for every encoder); the first ``--ft-draws``
    draws of each fraction. IoU at ``--seg-size`` px on the fixed test images."""
    import torch

    from codafeat.segment import CodaSegmenter

    a = run.args
    for name in ft_names(run):
        weights = ft_weights(run, name)
        for task, t in eval_tasks(tasks, "segmentation").items():
            for frac, draws in t["draws"].items():
                for d, tr in enumerate(draws[: a.ft_draws]):
                    if run.done("segment", name, task, frac, d):
                        continue
                    t0 = time.perf_counter()
                    epochs = max(1, math.ceil(a.seg_steps / math.ceil(len(tr) / a.seg_batch_size)))
                    seg = CodaSegmenter(
                        weights=weights,
                        image_size=a.seg_size,
                        n_classes=2,
                        epochs=epochs,
                        batch_size=a.seg_batch_size,
                        lr=a.seg_lr,
                        loss="dice",
                        validation_fraction=0.0,
                        device=a.device,
                        random_state=a.seed + d,
                    )
                    with torch.random.fork_rng(devices=[]):
                        seg.fit(t["X"][tr], t["y"][tr])
                    value = float(seg.score(t["X"][t["test"]], t["y"][t["test"]]))
                    rp.save_json(
                        run.cell("segment", name, task, frac, d),
                        dict(score=value, n_train=len(tr), seconds=time.perf_counter() - t0, epochs=epochs),
                    )
                    log(f"segment {name} {task} {frac} draw {d}: {value:.3f} ({time.perf_counter() - t0:.1f}s)")


STAGE_FN = {"embed": stage_embed, "linear": stage_linear, "finetune": stage_finetune, "segment": stage_segment}


# ---------------------------------------------------------------------------- RESULTS.md
LABEL = {
    "coda": "Coda (both)",
    "inter_only": "inter-organ only",
    "intra_only": "intra-organ only",
    "random": "random init",
    "raw_pixels": "raw pixels",
    "mean": "predict the training mean",
    "coda_koleo": "Coda, koleo_weight=0.1 (the previous recipe)",
}
TASK_TEXT = {
    "nih_pneumonia": ("NIH pneumonia vs no finding (patient-grouped split)", "ROC AUC (%)"),
    "boneage": ("Bone age (RSNA hands)", "mean absolute error (months, lower is better)"),
    "heart": ("JSRT heart segmentation", "foreground IoU (%)"),
    "clavicle": ("JSRT clavicle segmentation", "foreground IoU (%)"),
    "knee_kl": ("Knee KL grade (control: no signal at 64 px)", "accuracy (%)"),
    "jsrt": ("JSRT nodules (control: no signal at 64 px)", "ROC AUC (%)"),
    "shoulder": ("Shoulder implant maker (training images, labels unseen in pretraining)", "balanced accuracy (%)"),
}
PROTOCOLS = {"linear": "Linear probe (frozen)", "finetune": "Fine-tuning", "segment": "Fine-tuning (U-Net)"}
NOTES = ("<!-- transfer-notes -->", "<!-- /transfer-notes -->")


def seed_group(name: str) -> str:
    """``coda#s1@grid2`` -> ``coda@grid2``: encoders pretrained with other seeds share a row."""
    base, _, tag = name.partition("@")
    return base.split("#")[0] + (f"@{tag}" if tag else "")


def collect(run: Run) -> dict[str, Any]:
    """``{protocol: {task: {encoder: {fraction: [scores]}}}}`` and ``n_train`` from the cells on disk.

    Encoders that differ only in their pretraining seed (``name#seed``) are pooled: a row's
    scores are every (seed, draw) cell.
    """
    out: dict[str, Any] = {p: {} for p in PROTOCOLS} | {"n_train": {}, "seconds": {}, "seeds": {}}
    for cell in sorted((run.out / "cells").glob("*.json")):
        parts = cell.stem.split("__")
        r = rp.load_json(cell)
        out["seconds"][parts[0]] = out["seconds"].get(parts[0], 0.0) + float(r.get("seconds", 0.0))
        if parts[0] == "linear":
            row = out["linear"].setdefault(parts[2], {}).setdefault(seed_group(parts[1]), {})
            for frac, v in r["scores"].items():
                row.setdefault(frac, []).extend(v)
            out["n_train"].setdefault(parts[2], {}).update(r["n_train"])
            out["seeds"].setdefault(seed_group(parts[1]), set()).add(parts[1])
        elif parts[0] in ("finetune", "segment"):
            _, name, task, frac, _draw = parts
            row = out[parts[0]].setdefault(task, {}).setdefault(seed_group(name), {})
            row.setdefault(frac, []).append(r["score"])
            out["n_train"].setdefault(task, {})[frac] = r["n_train"]
            out["seeds"].setdefault(seed_group(name), set()).add(name)
    return out


def _encoders_text(run: Run) -> str:
    """How the evaluated encoders were made."""
    mine = [n for n in run.args.variants if Path(run.weights(n)).exists()]
    extra = ", ".join(f"`{_relative(e)}`" for e in run.args.extra) or "none"
    if not mine:
        return f"Encoders: the weights files given as `--extra` ({extra}), random init and raw pixels."
    return (
        f"Encoders pretrained here with the recipe `{run.args.recipe}`"
        + (" plus " + ", ".join(f"`{x}`" for x in run.args.set) if run.args.set else "")
        + ": "
        + ", ".join(f"`{k}={v}`" for k, v in run.settings.items())
        + f", `random_state={run.args.seed}`, on `organs7/` (at most {run.args.max_images_per_organ} images per organ); "
        "the single-branch encoders set the other branch's weight to 0 (and the KoLeo term with the intra-organ "
        f"branch). Extra encoders: {extra}."
    )


def _relative(command: str) -> str:
    """A recorded command with this machine's absolute paths made relative to the repository."""
    import re

    command = re.sub(r"(?<![\w.])/\S*?/shared/data", "../shared/data", command)
    return re.sub(r"(?<![\w.])/\S*?/(benchmarks/out/)", r"\1", command)


def _labels(run: Run) -> dict[str, str]:
    """Row names: the built-in encoders' and those given with ``--label NAME=TEXT``."""
    return {**LABEL, **dict(item.split("=", 1) for item in run.args.label)}


def _row_label(name: str, labels: dict[str, str]) -> str:
    """``small8@grid2+96px`` -> ``<small8's label> (grid2, 96px)``: a row's name in tables and figures."""
    base, _, tag = name.partition("@")
    return labels.get(base, base) + (f" ({tag.replace('+', ', ')})" if tag else "")


def _table(
    scores: dict[str, dict[str, list[float]]],
    n_train: dict[str, int],
    order: list[str],
    *,
    percent: bool = True,
    labels: dict[str, str] = LABEL,
) -> list[str]:
    fracs = sorted(n_train, key=lambda f: float(f.rstrip("%")))
    k = 100 if percent else 1
    lines = [
        "| encoder | " + " | ".join(f"{f} (n={n_train.get(f, '?')})" for f in fracs) + " | mean |",
        "|---" * (len(fracs) + 2) + "|",
    ]
    for name in [n for n in order if n in scores]:
        cells, means = [], []
        for f in fracs:
            v = np.asarray(scores[name].get(f, []), dtype=float)
            cells.append(f"{k * v.mean():.1f} ± {k * v.std():.1f}" if len(v) else "-")
            means.append(v.mean() if len(v) else np.nan)
        lines.append(f"| {_row_label(name, labels)} | " + " | ".join(cells) + f" | {k * np.nanmean(means):.1f} |")
    return lines


def section(run: Run, old: str | None) -> str:
    r = collect(run)
    meta = rp.load_json(run.out / "meta.json") if (run.out / "meta.json").exists() else {}
    order = [*run.args.variants, *dict.fromkeys(seed_group(e.split("=", 1)[0]) for e in run.args.extra), "random"]
    tags = sorted({c.stem.split("__")[1].partition("@")[2] for c in (run.out / "cells").glob("*__*.json")})
    order = [f"{n}@{t}".rstrip("@") for t in tags for n in [*order, "raw_pixels", "mean"]]
    commands = list(dict.fromkeys(_relative(c) for c in (meta.get("commands") or [meta.get("command", "?")])))
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
        _encoders_text(run),
        "",
        f"Protocol: a fixed stratified test split ({100 * run.args.test_fraction:g} %) per task (NIH pneumonia: whole "
        f"patients; bone age: stratified by quintile), training images drawn from the rest at each fraction "
        f"({run.args.draws} stratified draws for the frozen probes, the first {run.args.ft_draws} of them fine-tuned; "
        "the same for every encoder). Linear: standardised logistic regression on frozen embeddings (bone age: "
        "standardised ridge, its penalty chosen by leave-one-out inside the draw, against predicting the draw's "
        "mean). Segmentation: `CodaSegmenter` (U-Net, random decoder) at "
        f"{run.args.seg_size} px, {run.args.seg_steps} steps, batch {run.args.seg_batch_size}, decoder lr "
        f"{run.args.seg_lr}, Dice loss. Fine-tuning: `CodaClassifier` / `CodaRegressor` "
        "(linear head, whole network), "
        + ", ".join(f"`{k}={v}`" for k, v in run.ft_settings().items())
        + " (epochs = steps / batches per epoch), augmentation on, the same for every encoder.",
        "",
    ]
    order = order + sorted({n for p in PROTOCOLS for t in r[p].values() for n in t} - set(order))
    for task, (title, unit) in TASK_TEXT.items():
        protocols = [p for p in PROTOCOLS if task in r[p]]
        if not protocols:
            continue
        lines += [f"### {title}, {unit}, mean ± std over draws (and pretraining seeds)", ""]
        for p in protocols:
            lines += [f"{PROTOCOLS[p]}:", ""]
            lines += _table(
                r[p][task], r["n_train"][task], order, percent=TASK_KIND[task][1] != "mae", labels=_labels(run)
            ) + [""]
            figure = _learning_curve(
                run, r[p][task], r["n_train"][task], order, f"{title}: {PROTOCOLS[p]}", unit, f"transfer_{task}_{p}.png"
            )
            if figure:
                lines += [f"![{title}, {PROTOCOLS[p]}: score against training labels]({figure})", ""]
    several = {g: sorted(v) for g, v in r["seeds"].items() if len(v) > 1}
    if several:
        lines += [
            "Rows pooled over pretraining seeds: " + "; ".join(f"{g}: {', '.join(v)}" for g, v in several.items()),
            "",
        ]
    notes = NOTES[0] + "\n(no reading yet)\n" + NOTES[1]
    if old and NOTES[0] in old:
        notes = old[old.index(NOTES[0]) : old.index(NOTES[1]) + len(NOTES[1])]
    return "\n".join(lines + [notes, ""])


def _learning_curve(
    run: Run, scores: dict, n_train: dict, order: list[str], title: str, unit: str, name: str
) -> str | None:
    """The table as a figure (codafeat.plot.learning_curve) in ``<results folder>/figures``; its path there."""
    try:
        from codafeat.plot import learning_curve
    except ImportError:
        return None
    folder = Path(run.args.results_file).parent / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    k = 100.0 if "%" in unit else 1.0
    labels = _labels(run)
    curves = {
        _row_label(n, labels): {f: [k * v for v in vals] for f, vals in scores[n].items()} for n in order if n in scores
    }
    try:
        learning_curve(curves, n_train=n_train, ylabel=unit, title=title, path=folder / name)
    except ImportError:
        return None
    return f"figures/{name}"


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
    hand = (np.asarray(yt) == "hand").astype(int)
    args.seg_size, args.seg_steps, args.ft_draws = 32, 2, 1
    masks = (Xt > Xt.mean(axis=(1, 2), keepdims=True)).astype(np.uint8)
    seg = make_task(Xt, hand, "iou", args)
    tasks = {
        "nih_pneumonia": make_task(Xt, hand, "roc_auc", args, groups=np.arange(len(Xt)) // 2),
        "boneage": make_task(Xt, 100 * Xt.mean(axis=(1, 2)), "mae", args, kind="regression"),
        "heart": dict(seg, y=masks, kind="segmentation"),
        "knee_kl": make_task(Xt, np.arange(len(Xt)) % 3, "accuracy", args),
    }
    for stage in ("embed", "linear", "finetune", "segment"):
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
    g.add_argument("--label", action="append", default=[], metavar="NAME=TEXT", help="a table row's name for NAME")
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
    g.add_argument(
        "--features",
        default=None,
        choices=("pooled", "stages", "grid"),
        help="feature layout of every encoder (CodaEncoder's features; default: each weights' own); names get a tag",
    )
    g.add_argument("--grid-size", type=int, default=None, help="grid side of --features grid (default 2)")
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--tasks",
        default=",".join(DEV_TASKS),
        help="the dev suite: nih_pneumonia, boneage, heart, clavicle (JSRT masks), knee_kl and jsrt (nodules, "
        f"controls); also shoulder (organs7/shoulder's makers). Default: {','.join(DEV_TASKS)}",
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
    g.add_argument("--ft-draws", type=int, default=3, help="draws per fraction that are fine-tuned (the first ones)")
    g.add_argument("--seg-size", type=int, default=128, help="segmentation input side (images and masks)")
    g.add_argument("--seg-steps", type=int, default=80, help="optimiser steps per segmentation fit")
    g.add_argument("--seg-batch-size", type=int, default=4)
    g.add_argument("--seg-lr", type=float, default=1e-2, help="decoder lr (the encoder gets a tenth)")
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
    for stage in ("embed", "linear", "finetune", "segment"):
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
