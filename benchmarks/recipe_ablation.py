"""Choose the small-compute recipe (issue 10, item 6) on training data only.

Every configuration pretrains the same backbone with the same seed on the same
subsample of ``../shared/data/organs7`` and is judged by the built-in training monitor on
a stratified held-out split *of those training images* (``monitor_fraction``). No
evaluation folder (``organs7_eval``, ``knee_kl``, ``jsrt``) is read, so the recipe is
never tuned on evaluation images.

Each configuration changes one thing against its parent (see ``CONFIGS``); a line per
configuration gives the intra-organ loss at the first epoch, its minimum and its last
value (``ln K`` for reference), whether it rose over the last third of training, and the
monitor's last figures (organ kNN accuracy and NMI of the teacher, teacher entropy over
``ln K``, the information its targets carry, and the normalised embedding spread).

``--phantoms`` runs the same configurations on the demo's synthetic phantoms instead
(:func:`codafeat.phantoms.make_radiograph_phantoms`, 60 per organ, 6 organs, drawn with
``--seed``), to study why the intra-organ branch collapses there.

Usage::

    python benchmarks/recipe_ablation.py --configs base,sym,sym_m99 --out benchmarks/out/recipe
    python benchmarks/recipe_ablation.py --table --references   # the table, and random init / raw pixels
    python benchmarks/recipe_ablation.py --phantoms --epochs 12 --monitor-fraction 0.05 \
        --configs sym_m99,sym_m99_kl --out benchmarks/out/recipe_phantoms
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "organs7"

#: The starting point: the settings of benchmarks/reproduce.py and the demo before issue 10.
BASE: dict[str, Any] = dict(
    backbone="convnext_atto",
    image_size=64,
    local_size=32,
    n_local_crops=4,
    batch_size=32,
    lr=1e-3,
    warmup_epochs=1,
    head_out_dim=4096,
    head_hidden_dim=512,
    head_bottleneck_dim=128,
    symmetric=False,
    drop_path_rate=0.0,
    momentum_teacher=0.996,
)

#: name -> (parent, changes). Each row changes one thing against its parent.
CONFIGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "base": (None, {}),
    "sym": ("base", dict(symmetric=True)),
    "sym_m99": ("sym", dict(momentum_teacher=0.99)),
    "sym_m99_t02": ("sym_m99", dict(teacher_temp=0.02, warmup_teacher_temp=0.02)),
    "sym_m99_k1024": ("sym_m99", dict(head_out_dim=1024)),
    "sym_m99_lr3": ("sym_m99", dict(lr=3e-3)),
    "sym_m99_dp": ("sym_m99", dict(drop_path_rate=0.1)),
    "sym_m98": ("sym_m99", dict(momentum_teacher=0.98)),
    "sym_m99_c99": ("sym_m99", dict(center_momentum=0.99)),
    # the branches' interplay: does the inter-organ term erase what the intra-organ term needs?
    "sym_m99_intra": ("sym_m99", dict(lambda_inter=0.0)),
    "sym_m99_li03": ("sym_m99", dict(lambda_inter=0.3)),
    "sym_m99_tau02": ("sym_m99", dict(temperature=0.2)),
    # DINO's uniform collapse (see RESULTS): slower steps, fewer outputs, fixed prototypes,
    # a KoLeo term on the intra-organ bottleneck, then sharper targets
    "sym_m99_lr25e5": ("sym_m99", dict(lr=2.5e-4)),
    "sym_m99_k256": ("sym_m99", dict(head_out_dim=256)),
    "sym_m99_frozen": ("sym_m99", dict(freeze_last_layer=1_000_000)),
    "sym_m99_kl": ("sym_m99", dict(koleo_weight=0.1)),
    "sym_m99_kl_t02": ("sym_m99_kl", dict(teacher_temp=0.02, warmup_teacher_temp=0.02)),
}


def settings_of(name: str) -> dict[str, Any]:
    parent, change = CONFIGS[name]
    base = dict(BASE) if parent is None else settings_of(parent)
    base.update(change)
    return base


#: Set by ``--phantoms``: the folder of phantom images used instead of ``DATA``.
PHANTOMS: dict[str, Path] = {}


def phantom_folder(out: Path, seed: int) -> Path:
    """The demo's phantoms (60 per organ, 64 px, drawn with ``seed``) as an organ-per-folder tree."""
    from codafeat.data.manifest import write_image_folder
    from codafeat.phantoms import make_radiograph_phantoms

    X, organs, variants = make_radiograph_phantoms(60, image_size=64, random_state=seed)
    return write_image_folder(X, organs, out / "phantom_data", variants=variants, overwrite=True)


def subsample(per_organ: int, seed: int) -> tuple[list[str], np.ndarray]:
    from codafeat.data.manifest import scan_organ_folder

    if PHANTOMS:
        return scan_organ_folder(PHANTOMS["folder"])
    paths, organs = scan_organ_folder(DATA)
    rng = np.random.RandomState(seed)
    keep: list[int] = []
    for organ in np.unique(organs):
        idx = np.flatnonzero(organs == organ)
        keep += rng.choice(idx, min(per_organ, len(idx)), replace=False).tolist()
    keep.sort()
    return [paths[i] for i in keep], organs[keep]


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codafeat import CodaPretrainer

    torch.set_num_threads(args.threads)
    paths, organs = subsample(args.per_organ, args.seed)
    params = dict(
        settings_of(name),
        epochs=args.epochs,
        monitor_fraction=args.monitor_fraction,
        monitor_every=1,
        random_state=args.seed,
        device="cpu",
    )
    t0 = time.perf_counter()
    pre = CodaPretrainer(**params).fit(paths, organs)
    return {
        "name": name,
        "params": params,
        "history": pre.history_,
        "seconds": time.perf_counter() - t0,
        "n_train": int(pre.n_train_images_),
        "n_monitor": int(len(pre.monitor_indices_)),
    }


def references(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Random init and raw pixels on the very monitor images the configurations are judged on."""
    import torch
    from sklearn.utils import check_random_state

    from codafeat._defaults import MEAN as DEFAULT_MEAN
    from codafeat._defaults import STD as DEFAULT_STD
    from codafeat._train.monitor import TrainingMonitor, monitor_split
    from codafeat.analysis import organ_separation
    from codafeat.data.cache.decoded import DecodedCache, cache_size_for
    from codafeat.losses.intra_organ import IntraOrganLoss
    from codafeat.nn.coda_model import CodaNetwork

    torch.set_num_threads(args.threads)
    s = settings_of("base")
    paths, organs = subsample(args.per_organ, args.seed)
    seed = int(check_random_state(args.seed).randint(0, 2**31 - 1))  # CodaPretrainer's seed_ for this random_state
    cache = DecodedCache.build(paths, cache_size_for(s["image_size"]))
    _, labels = np.unique(organs, return_inverse=True)
    _, held, _ = monitor_split(labels, args.monitor_fraction, seed)
    mon = TrainingMonitor.from_cache(cache, held, labels, s["image_size"], torch.device("cpu"))
    raw = organ_separation(mon.images.float().flatten(1).numpy() / 255, mon.labels, n_neighbors=5)
    torch.manual_seed(seed)
    net = CodaNetwork(
        s["backbone"],
        mean=DEFAULT_MEAN,
        std=DEFAULT_STD,
        head_out_dim=s["head_out_dim"],
        head_hidden_dim=s["head_hidden_dim"],
        head_bottleneck_dim=s["head_bottleneck_dim"],
    ).eval()
    random = mon.measure(net, IntraOrganLoss(out_dim=s["head_out_dim"]), 0.04)
    return {
        "raw pixels": {"knn": raw["knn_accuracy"], "nmi": raw["nmi"]},
        "random init": {
            "knn": random["monitor_knn_accuracy"],
            "nmi": random["monitor_nmi"],
            "h_ratio": random["teacher_entropy"] / random["ln_k"],
            "mi": random["teacher_mi"],
        },
    }


def summary(r: dict[str, Any]) -> dict[str, Any]:
    h = r["history"]
    intra = [e["loss_intra"] for e in h]
    last = h[-1]
    third = intra[-max(2, len(intra) // 3) :]
    return {
        "intra_first": intra[0],
        "intra_min": min(intra),
        "intra_last": intra[-1],
        "ln_k": math.log(r["params"]["head_out_dim"]),
        "rises_late": bool(third[-1] > min(third) + 0.05),
        "knn": last.get("monitor_knn_accuracy"),
        "nmi": last.get("monitor_nmi"),
        "h_ratio": last["teacher_entropy"] / last["ln_k"],
        "mi": last["teacher_mi"],
        "embed_std": last["embed_std"],
        "inter_last": last["loss_inter"],
        "warnings": len(last.get("collapse_warnings", [])),
        "seconds": r["seconds"],
    }


def table(out: Path) -> str:
    rows = [
        "| config | changes (vs parent) | intra first / min / last (ln K) | rises late | kNN | NMI | H_t/lnK | MI | embed std | inter last | warn | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (parent, change) in CONFIGS.items():
        f = out / f"{name}.json"
        if not f.exists():
            continue
        s = summary(json.loads(f.read_text()))
        ch = ", ".join(f"{k}={v}" for k, v in change.items()) or "-"
        rows.append(
            f"| {name} | {ch} (vs {parent or '-'}) | {s['intra_first']:.2f} / {s['intra_min']:.2f} / {s['intra_last']:.2f} ({s['ln_k']:.2f}) "
            f"| {'yes' if s['rises_late'] else 'no'} | {s['knn']:.3f} | {s['nmi']:.3f} | {s['h_ratio']:.2f} | {s['mi']:.2f} "
            f"| {s['embed_std']:.2f} | {s['inter_last']:.3f} | {s['warnings']} | {s['seconds']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="base,sym,sym_m99", help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "recipe"))
    p.add_argument("--per-organ", type=int, default=150)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--monitor-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", action="store_true", help="only print the table of finished configs")
    p.add_argument(
        "--references", action="store_true", help="also measure random init and raw pixels on the monitor images"
    )
    p.add_argument("--phantoms", action="store_true", help="the demo's synthetic phantoms instead of organs7")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.phantoms:
        PHANTOMS["folder"] = phantom_folder(out, args.seed)
    if not args.table:
        if not DATA.is_dir() and not args.phantoms:
            sys.exit(f"recipe_ablation.py: {DATA.resolve()} not found (see ../shared/data/README.md)")
        for name in args.configs.split(","):
            if name not in CONFIGS:
                sys.exit(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
            f = out / f"{name}.json"
            if f.exists():
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {settings_of(name)}", flush=True)
            r = run_one(name, args)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(r, indent=1))
            os.replace(tmp, f)
            s = summary(r)
            print(
                f"[{time.strftime('%H:%M:%S')}] {name}: "
                + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}),
                flush=True,
            )
    print(
        f"per organ {args.per_organ}, epochs {args.epochs}, seed {args.seed}, monitor_fraction {args.monitor_fraction}"
    )
    print(table(out))
    if args.references:
        for name, figures in references(args).items():
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
