"""What CodaClassifier adds to a bare timm fine-tuning loop on the same images (issue 22 goal: <= 10 %).

Both sides fine-tune the same timm model with a linear head (AdamW, the same batch size,
the same number of optimiser steps, float32 on the CPU or the device's autocast) on the same
images, already in memory as an array. The bare loop is what a user would write by hand:
a tensor of the images, ``randperm`` batches, forward, cross-entropy, backward, step. The
classifier does everything it does for a user: parameter validation, weights, decoding the
array into its float16 store, the schedules, gradient clipping, the history. Augmentation
is off on both sides (the classifier's is a user choice the bare loop does not make).
Each side runs ``--repeats`` times alternately; the ratio of the median times is the result.

Usage::

    python benchmarks/finetune_overhead.py                      # convnext_atto, 64 px, 256 images
    python benchmarks/finetune_overhead.py --backbone test_convnext --n 64 --epochs 1 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def bare_loop(X: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds of a hand-written timm fine-tuning loop."""
    import timm
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(0)
    net = timm.create_model(args.backbone, pretrained=False, num_classes=int(y.max()) + 1).to(args.device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    images = torch.from_numpy(X).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = ((images - mean) / std).contiguous()
    labels = torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(args.epochs):
        perm = torch.randperm(len(images), generator=g)
        for s in range(0, len(images), args.batch_size):
            idx = perm[s : s + args.batch_size]
            loss = torch.nn.functional.cross_entropy(net(images[idx].to(args.device)), labels[idx].to(args.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def classifier(X: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds of ``CodaClassifier.fit`` with the same model, steps and batch size."""
    from codafeat import CodaClassifier

    t0 = time.perf_counter()
    CodaClassifier(
        backbone=args.backbone,
        image_size=X.shape[-1],
        epochs=args.epochs,
        batch_size=args.batch_size,
        augment=False,
        device=args.device,
        num_workers=0,
        random_state=0,
    ).fit(X, y)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.random((args.n, args.size, args.size), dtype=np.float32)
    y = (np.arange(args.n) % 5).astype(np.int64)
    classifier(X[:8], y[:8], argparse.Namespace(**{**vars(args), "epochs": 1}))  # warm-up: imports, kernels
    bare_loop(X[:8], y[:8], argparse.Namespace(**{**vars(args), "epochs": 1}))
    times: dict[str, list[float]] = {"bare timm loop": [], "CodaClassifier": []}
    for _ in range(args.repeats):
        times["bare timm loop"].append(bare_loop(X, y, args))
        times["CodaClassifier"].append(classifier(X, y, args))
    steps = args.epochs * -(-args.n // args.batch_size)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.backbone}, {args.size} px, {args.n} images, {args.epochs} epochs ({steps} steps of {args.batch_size}), "
        f"{args.device}, {args.threads} threads, median of {args.repeats}:"
    )
    for k, v in med.items():
        print(
            f"  {k:16s} {v:7.2f} s  ({args.n * args.epochs / v:6.1f} images/s)  runs: {', '.join(f'{t:.2f}' for t in times[k])}"
        )
    print(f"  overhead of CodaClassifier: {100 * (med['CodaClassifier'] / med['bare timm loop'] - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
