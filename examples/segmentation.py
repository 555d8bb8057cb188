"""Few-shot segmentation: fine-tune a U-Net on Coda weights (the paper's transfer protocol)
========================================================================================

Run it::

    python examples/segmentation.py                                   # synthetic blobs, random init
    python examples/segmentation.py --weights my_coda.safetensors \\
        --images ../shared/data/jsrt/images --masks ../shared/data/jsrt/masks/heart --fraction 0.1

``--images`` and ``--masks`` are two folders whose files pair by name (a binary mask with
values 0/255, or class indices). A fixed test split (``--test-fraction``) is held out; the
U-Net is fine-tuned on ``--fraction`` of the rest and scored on the test split (IoU and
Dice of the foreground). Without ``--images`` a small synthetic set of bright ellipses on a
noisy background is drawn (for a first run, not a benchmark).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from codafeat import CodaSegmenter, dice
from codafeat.data.io import find_images


def synthetic_blobs(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy images, each with one bright ellipse (the mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    X = np.empty((n, size, size), np.float32)
    Y = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        ry, rx = rng.uniform(0.12, 0.25, 2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        Y[i] = m
        X[i] = np.clip(0.3 + 0.4 * m + 0.15 * rng.standard_normal((size, size)), 0, 1)
    return X, Y


def paired_files(images: str, masks: str) -> tuple[list[str], list[str]]:
    files = find_images(images)
    names = {Path(f).name: f for f in find_images(masks)}
    missing = [f for f in files if Path(f).name not in names]
    if missing:
        raise SystemExit(f"no mask in {masks} for {len(missing)} image(s), e.g. {missing[0]}")
    return files, [names[Path(f).name] for f in files]


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", default=None, help="codafeat weights file or installed name (default: random init)"
    )
    parser.add_argument("--backbone", default="convnext_atto", help="timm backbone without --weights")
    parser.add_argument("--images", default=None, help="folder of images (default: synthetic blobs)")
    parser.add_argument("--masks", default=None, help="folder of masks paired with --images by file name")
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of the training pool used (few-shot)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-synthetic", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    if args.images:
        if not args.masks:
            parser.error("--images needs --masks")
        X, Y = paired_files(args.images, args.masks)
    else:
        X, Y = synthetic_blobs(args.n_synthetic, 96, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(X))
    n_test = max(1, round(args.test_fraction * len(X)))
    test, pool = order[:n_test], order[n_test:]
    train = pool[: max(1, round(args.fraction * len(pool)))]
    pick = lambda A, idx: A[idx] if isinstance(A, np.ndarray) else [A[i] for i in idx]  # noqa: E731

    seg = CodaSegmenter(
        weights=args.weights,
        backbone=None if args.weights else args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        validation_fraction=0,
        device=args.device,
        random_state=args.seed,
        verbose=1,
    ).fit(pick(X, train), pick(Y, train))
    X_test, Y_test = pick(X, test), pick(Y, test)
    score = seg.score(X_test, Y_test)
    pred = seg.predict(X_test)  # masks at each test image's original size
    truth = Y_test if isinstance(Y_test, np.ndarray) else [read_mask(p) for p in Y_test]
    d = dice(truth, pred, labels=[1])
    print(f"trained on {len(train)} image(s), tested on {len(test)}: IoU {score:.3f}, Dice {d:.3f}")
    return score, d


def read_mask(path: str) -> np.ndarray:
    """A binary mask file as class indices (0/255 PNGs read 255 as class 1)."""
    from codafeat.data.seg_augment import encode_mask, load_mask

    return encode_mask(load_mask(path), 2, name=path)


if __name__ == "__main__":
    main()
