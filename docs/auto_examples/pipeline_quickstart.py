"""Quick start: a Coda encoder inside a scikit-learn Pipeline, evaluated with a few labels
=======================================================================================

Run it::

    python examples/pipeline_quickstart.py                        # tiny random encoder, seconds
    python examples/pipeline_quickstart.py --weights my_coda.safetensors

The images are codafeat's synthetic radiograph phantoms (drawings made for demos, not real
radiographs). Without ``--weights`` the encoder is a randomly initialised tiny backbone:
the score is then a baseline, not what a pretrained Coda model gives.
"""

from __future__ import annotations

import argparse

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from codafeat import CodaEncoder
from codafeat.fewshot.probes import FewShotSplit
from codafeat.phantoms import make_radiograph_phantoms


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", default=None, help="codafeat weights file or installed name (default: random init)"
    )
    parser.add_argument("--backbone", default="test_convnext", help="timm backbone without --weights (default: tiny)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-per-organ", type=int, default=20)
    parser.add_argument("--shots", type=int, default=5, help="training images per organ")
    parser.add_argument("--n-repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    images, organs, _ = make_radiograph_phantoms(args.n_per_organ, image_size=args.image_size, random_state=0)
    encoder = CodaEncoder(
        weights=args.weights,
        backbone=None if args.weights else args.backbone,
        image_size=args.image_size,
        device=args.device,
        random_state=0,
    )
    clf = make_pipeline(encoder, LogisticRegression(max_iter=1000))
    cv = FewShotSplit(n_shots=args.shots, n_repeats=args.n_repeats, random_state=0)
    scores = cross_val_score(clf, images, organs, cv=cv)
    print(f"{len(images)} phantom images, {len(set(organs))} organs")
    print(f"{args.shots}-shot organ accuracy over {args.n_repeats} draws: {scores.mean():.3f} ± {scores.std():.3f}")
    return float(scores.mean())


if __name__ == "__main__":
    main()
