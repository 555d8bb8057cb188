"""Transfer the way the paper measures it, on every labelled dev task (issue 22, item 5).

One run pretrains (or reuses) the encoders and measures, side by side, on the dev tasks in
``<repo>/../shared/data``:

- **knee KL grade** (``knee_kl/``, 500 knees, 5 grades, accuracy; majority class 39.8 %);
- **JSRT nodules** (``jsrt/``, 247 chest radiographs, nodule or not, ROC AUC on a fixed
  stratified test split of 40 %, training images drawn from the rest).

Two protocols, at 1/10/20/50 % of the training images, with ``--draws`` stratified draws
per fraction (the same draws for every encoder):

1. ``linear``: a linear probe (standardised logistic regression, :mod:`codafeat.probes`) on
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
TASKS = ("knee_kl", "jsrt")
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
        sig = dict(self.settings, recipe=args.recipe, seed=args.seed, max_images_per_organ=args.max_images_per_organ,
                   test_fraction=args.test_fraction, ft=self.ft_settings())
        sig_file = self.out / "signature.json"
        if sig_file.exists():
            old = rp.load_json(sig_file)
            if old != json.loads(json.dumps(sig)):
                if args.resume:
                    diff = {k: (old.get(k), v) for k, v in sig.items() if old.get(k) != v}
                    raise SystemExit(f"--resume: {self.out} holds results of other settings {diff}; use another --out")
                for p in self.out.glob("cells/*.json"):
                    p.unlink()
        rp.save_json(sig_file, sig)

    def ft_settings(self) -> dict[str, Any]:
        a = self.args
        return dict(epochs=a.ft_epochs, lr=a.ft_lr, encoder_lr_factor=a.ft_encoder_lr_factor, batch_size=a.ft_batch_size,
                    lp_epochs=a.ft_lp_epochs, weight_decay=a.ft_weight_decay)

    def cell(self, *parts: Any) -> Path:
        return self.out / "cells" / ("__".join(str(p) for p in parts) + ".json")

    def done(self, *parts: Any) -> bool:
        return self.args.resume and self.cell(*parts).exists()

    def weights(self, name: str) -> str | None:
        """Weights of an encoder: a pretrained variant, an ``--extra`` file, or None (random init / pixels)."""
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
        return names + ["random", "raw_pixels"]


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
            **{**settings, **branch}, lambda_inter=l_inter, lambda_intra=l_intra, device=args.device,
            cache_dir=str(run.out / "decoded_cache"), checkpoint_dir=str(run.out / f"ckpt_{name}"), resume=True,
            random_state=args.seed,
        )
        pre.fit(paths, organs)
        pre.save(weights)
        seconds = max(time.perf_counter() - t, float(sum(h["seconds"] for h in pre.history_)))
        rp.save_json(run.cell("pretrain", name), dict(history=pre.history_, seconds=seconds, lambda_inter=l_inter,
                                                      lambda_intra=l_intra, settings={**settings, **branch}))
        last = pre.history_[-1]
        log(f"pretrain {name}: {seconds:.0f}s, loss {last['loss']:.3f} (inter {last['loss_inter']}, intra {last['loss_intra']})")


# ---------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
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
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a CodaPretrainer parameter on top of the recipe (JSON value), repeatable")
    g.add_argument("--variants", default=",".join(VARIANTS), help="pretrained encoders: coda,inter_only,intra_only")
    g.add_argument("--extra", action="append", default=[], metavar="NAME=WEIGHTS", help="more encoders to evaluate")
    g.add_argument("--max-images-per-organ", type=int, default=600)
    g = p.add_argument_group("evaluation")
    g.add_argument("--tasks", default=",".join(TASKS))
    g.add_argument("--draws", type=int, default=5, help="stratified draws per fraction")
    g.add_argument("--test-fraction", type=float, default=0.4, help="fixed test split of each task")
    g.add_argument("--ft-epochs", type=int, default=15)
    g.add_argument("--ft-lp-epochs", type=int, default=5, help="linear-probe epochs before fine-tuning (LP-FT)")
    g.add_argument("--ft-lr", type=float, default=1e-3, help="head learning rate")
    g.add_argument("--ft-encoder-lr-factor", type=float, default=0.1)
    g.add_argument("--ft-batch-size", type=int, default=32)
    g.add_argument("--ft-weight-decay", type=float, default=1e-4)
    g.add_argument("--ft-encoders", default="", help="fine-tune only these encoders (default: all but raw pixels)")
    a = p.parse_args(argv)
    a.stages = [s for s in a.stages.split(",") if s]
    a.variants = [v for v in a.variants.split(",") if v]
    a.tasks = [t for t in a.tasks.split(",") if t]
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
    tasks = load_tasks(data, args) if set(args.stages) - {"pretrain"} else {}
    for stage in ("embed", "linear", "finetune"):
        if stage in args.stages:
            t = time.perf_counter()
            STAGE_FN[stage](run, tasks)
            log(f"stage {stage}: {time.perf_counter() - t:.0f}s")
    meta = rp.load_json(run.out / "meta.json") if (run.out / "meta.json").exists() else {}
    meta.setdefault("seconds", {})
    meta.update(machine=rp.machine(), commit=rp.git_commit(), command="python benchmarks/transfer.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    meta["seconds"]["last_run"] = time.perf_counter() - t0
    rp.save_json(run.out / "meta.json", meta)
    if args.results:
        write_results(run, Path(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
