"""Few-shot segmentation on JSRT (paper Table 1 protocol, CPU-sized): Coda encoder vs random.

For each task (heart; clavicle = left + right clavicle as one class), a fixed test split
(``--test-size`` images, chosen once with seed 0) and a training pool (the rest). For each
fraction of the pool (1, 10, 20, 50 %: ``max(1, round(f * n_pool))`` images) and each seed,
the same training subset is used to fine-tune two U-Nets (:class:`codafeat.CodaSegmenter`)
with identical settings; they differ only in the encoder's initial tensors:

* ``coda``: the encoder of ``--weights`` (a codafeat safetensors file);
* ``random``: a randomly initialised backbone of the same architecture, with the same
  config (input normalisation), seeded by the run seed.

Every run takes the same number of optimiser steps (``--steps``; epochs = steps / steps per
epoch), so that a 1-image run is not 50 times shorter than a 50 % run. Settings are CPU-sized
and the same for both encoders: 128 px, 80 steps of 4 images, soft-Dice loss (with
cross-entropy added, these short runs first sit on the all-background prior for ~50-100
steps), decoder lr 1e-2, encoder lr 1e-3, augmentation on, decoder widths (128, 64, 32, 16,
16). Images and masks
are downscaled to ``--size`` once (bilinear / nearest) and the test IoU (foreground, per
image, averaged) is computed at that size. The paper fine-tunes a ConvNeXt-B pretrained
for 800 epochs on 23 organs; this is a small CPU model, so compare trends, not levels.

Without ``--weights`` the script makes a *randomly initialised* encoder file as a
placeholder (to check the pipeline); its "coda" rows are then not Coda.

Usage::

    python benchmarks/segmentation.py --weights coda_atto.safetensors        # ~15 min, 1 thread
    python benchmarks/segmentation.py --tasks heart --fractions 10 --seeds 1 --steps 10   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from codafeat.encoder import CodaEncoder
from codafeat.formats.weights import Weights
from codafeat.nn.backbone import create_backbone
from codafeat.segment import CodaSegmenter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "jsrt"
TASKS = {"heart": ("heart",), "clavicle": ("left_clavicle", "right_clavicle")}

#: Paper Table 1 (IoU %, ConvNeXt-B Coda vs LVM-Med), fractions 1 / 10 / 20 / 50 %.
PAPER = {
    "clavicle": {"Coda (paper)": [56.26, 76.96, 82.50, 85.97], "LVM-Med (paper)": [50.54, 53.49, 69.10, 79.88]},
    "heart": {"Coda (paper)": [67.05, 83.75, 88.42, 91.13], "LVM-Med (paper)": [36.42, 48.04, 48.15, 73.97]},
}
PAPER_FRACTIONS = (1, 10, 20, 50)


# --------------------------------------------------------------------------- data
def load_jsrt(root: Path, task: str, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, images ``(n, size, size)`` float32 in [0, 1], masks ``(n, size, size)`` uint8 {0, 1}."""
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    imgs, masks = [], []
    for name in names:
        with Image.open(root / "images" / name) as im:
            imgs.append(
                np.asarray(im.convert("L").resize((size, size), Image.BILINEAR, reducing_gap=2.0), np.float32) / 255
            )
        m = np.zeros((size, size), np.uint8)
        for part in TASKS[task]:
            with Image.open(root / "masks" / part / name) as mk:
                m |= (np.asarray(mk.convert("L").resize((size, size), Image.NEAREST)) > 127).astype(np.uint8)
        masks.append(m)
    return names, np.stack(imgs), np.stack(masks)


def split(n: int, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed test split (seed 0) and training pool, as sorted index arrays."""
    perm = np.random.RandomState(0).permutation(n)
    return np.sort(perm[test_size:]), np.sort(perm[:test_size])


def subset(pool: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    k = max(1, int(round(fraction * len(pool))))
    return np.sort(np.random.RandomState(1000 + seed).choice(pool, size=k, replace=False))


def random_weights_like(coda: Weights, seed: int) -> Weights:
    """Random tensors of the same architecture, same config (normalisation) as ``coda``."""
    cfg = coda.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_backbone(cfg["backbone"], pooling=cfg.get("pooling", "avg"), in_chans=cfg["in_chans"])
    cfg["training"] = {"init": "random", "seed": seed}
    return Weights.from_state(net.state_dict(), cfg, source=f"random {cfg['backbone']} (seed {seed})")


# --------------------------------------------------------------------------- runs
def few_shot_segmentation(
    weights: Weights,
    *,
    data: Path = DEFAULT_DATA,
    tasks: tuple[str, ...] = ("heart", "clavicle"),
    fractions: tuple[float, ...] = (0.01, 0.10, 0.20, 0.50),
    seeds: tuple[int, ...] = (0, 1, 2),
    size: int = 128,
    steps: int = 80,
    epochs: int | None = None,
    batch_size: int = 4,
    lr: float = 1e-2,
    encoder_lr: float | None = None,
    loss: str = "dice",
    test_size: int = 100,
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16),
    device: str = "auto",
    encoders: dict[str, Any] | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Run the protocol; one record per (task, fraction, seed, encoder).

    ``encoders`` maps a label to a :class:`Weights` or a callable ``seed -> Weights``;
    default ``{"coda": weights, "random": <random of the same architecture>}``.
    """
    if encoders is None:
        encoders = {"coda": weights, "random": lambda s: random_weights_like(weights, 10_000 + s)}
    records = []
    for task in tasks:
        t0 = time.perf_counter()
        names, X, Y = load_jsrt(Path(data), task, size)
        pool, test = split(len(names), test_size)
        log(
            f"[{task}] {len(names)} images at {size}px ({time.perf_counter() - t0:.1f}s): pool {len(pool)}, test {len(test)}"
        )
        for fraction in fractions:
            for seed in seeds:
                idx = subset(pool, fraction, seed)
                n_steps_epoch = math.ceil(len(idx) / min(batch_size, len(idx)))
                n_epochs = epochs if epochs is not None else max(1, math.ceil(steps / n_steps_epoch))
                for label, spec in encoders.items():
                    w = spec(seed) if callable(spec) else spec
                    t1 = time.perf_counter()
                    seg = CodaSegmenter(
                        weights=w,
                        image_size=size,
                        epochs=n_epochs,
                        batch_size=batch_size,
                        lr=lr,
                        encoder_lr=encoder_lr,
                        loss=loss,
                        decoder_channels=decoder_channels,
                        validation_fraction=0,
                        augment=True,
                        device=device,
                        random_state=seed,
                    )
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # e.g. an all-background subset is reported below
                        seg.fit(X[idx], Y[idx])
                    score = seg.score(X[test], Y[test])
                    rec = {
                        "task": task,
                        "fraction": fraction,
                        "n_train": int(len(idx)),
                        "seed": seed,
                        "encoder": label,
                        "iou": score,
                        "epochs": n_epochs,
                        "steps": n_epochs * n_steps_epoch,
                        "final_train_loss": seg.history_[-1]["train_loss"],
                        "time_s": time.perf_counter() - t1,
                    }
                    records.append(rec)
                    log(
                        f"  {task} {fraction:.0%} (n={len(idx)}) seed {seed} {label:>7}: IoU {100 * score:5.1f}  "
                        f"({rec['steps']} steps, loss {rec['final_train_loss']:.3f}, {rec['time_s']:.0f}s)"
                    )
    return records


def markdown_table(records: list[dict[str, Any]], *, with_paper: bool = True) -> str:
    """Mean ± std test IoU (%) per task, encoder and fraction; Δ = first encoder - second."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    fractions = sorted({r["fraction"] for r in records})
    encoders = list(dict.fromkeys(r["encoder"] for r in records))
    head = (
        "| task | encoder | "
        + " | ".join(f"{f:.0%} (n={next(r['n_train'] for r in records if r['fraction'] == f)})" for f in fractions)
        + " |"
    )
    lines = [head, "|---|---|" + "---|" * len(fractions)]
    for task in tasks:
        means = {}
        for enc in encoders:
            cells = []
            for f in fractions:
                v = [
                    100 * r["iou"] for r in records if r["task"] == task and r["encoder"] == enc and r["fraction"] == f
                ]
                means[enc, f] = float(np.mean(v)) if v else float("nan")
                cells.append(f"{np.mean(v):.1f} ± {np.std(v):.1f}" if v else "-")
            lines.append(f"| {task} | {enc} | " + " | ".join(cells) + " |")
        if len(encoders) >= 2:
            a, b = encoders[:2]
            lines.append(
                f"| {task} | Δ {a} − {b} | " + " | ".join(f"{means[a, f] - means[b, f]:+.1f}" for f in fractions) + " |"
            )
        if with_paper and task in PAPER:
            for label, vals in PAPER[task].items():
                paper = dict(zip(PAPER_FRACTIONS, vals))
                cells = [f"{paper[round(100 * f)]:.2f}" if round(100 * f) in paper else "-" for f in fractions]
                lines.append(f"| {task} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", type=Path, help="codafeat safetensors file of the (Coda) encoder")
    p.add_argument("--backbone", default="convnext_atto", help="placeholder backbone when --weights is absent")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSRT folder (images/, masks/<part>/)")
    p.add_argument("--tasks", default="heart,clavicle")
    p.add_argument("--fractions", default="1,10,20,50", help="percent of the training pool")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    p.add_argument("--size", type=int, default=128, help="image side for training and scoring")
    p.add_argument("--steps", type=int, default=80, help="optimiser steps per run")
    p.add_argument("--epochs", type=int, default=None, help="fixed epochs per run instead of --steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2, help="decoder learning rate (high: runs are short)")
    p.add_argument("--encoder-lr", type=float, default=None, help="encoder learning rate (default lr/10)")
    p.add_argument(
        "--loss",
        default="dice",
        choices=["dice", "ce", "ce+dice"],
        help="dice: learns within tens of steps; ce+dice first sits on the background prior",
    )
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--decoder-channels", default="128,64,32,16,16", help="U-Net decoder widths")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (1: robust on shared CPUs; 0 = torch default)"
    )
    p.add_argument("--json", type=Path, help="also write the per-run records here")
    args = p.parse_args(argv)

    if not (args.data / "images").is_dir():
        print(f"JSRT data not found at {args.data} (see ../shared/data/README.md); skipping.")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.weights is not None:
        weights = Weights.from_file(args.weights)
        source = str(args.weights)
    else:
        enc = CodaEncoder(backbone=args.backbone, image_size=args.size, random_state=12345).fit()
        with tempfile.TemporaryDirectory() as tmp:  # through a file, as real weights would come
            path = enc.save(Path(tmp) / "placeholder_random.safetensors")
            weights = Weights.from_file(path)
        source = f"PLACEHOLDER: randomly initialised {args.backbone} (CodaEncoder random_state=12345; not Coda)"
        print(f"warning: no --weights; the 'coda' rows use a {source}", file=sys.stderr)
    fractions = tuple(float(f) / 100 for f in args.fractions.split(","))
    t0 = time.perf_counter()
    records = few_shot_segmentation(
        weights,
        data=args.data,
        tasks=tuple(args.tasks.split(",")),
        fractions=fractions,
        seeds=tuple(range(args.seeds)),
        size=args.size,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        encoder_lr=args.encoder_lr,
        loss=args.loss,
        test_size=args.test_size,
        decoder_channels=tuple(int(c) for c in args.decoder_channels.split(",")),
        device=args.device,
    )
    wall = time.perf_counter() - t0
    cfg = weights.config
    print()
    print(f"encoder 'coda': {source} ({cfg['backbone']}, training: {json.dumps(cfg.get('training', {}))[:200]})")
    print(
        f"settings: size {args.size}, steps {args.steps if args.epochs is None else f'epochs {args.epochs}'}, "
        f"batch {args.batch_size}, lr {args.lr}, encoder_lr {args.encoder_lr or args.lr / 10}, "
        f"loss {args.loss}, decoder {args.decoder_channels}, augment on, test {args.test_size}, "
        f"seeds {args.seeds}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads {torch.get_num_threads()}, wall {wall / 60:.1f} min"
    )
    print()
    print(markdown_table(records))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": vars(args) | {"weights": source, "data": str(args.data)}, "records": records},
                default=str,
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
