"""Few-shot probes on frozen Coda embeddings, in the layout of the paper's Table 1
===============================================================================

Run it::

    python examples/few_shot_probe.py                             # tiny random encoder, phantoms
    python examples/few_shot_probe.py --weights my_coda.safetensors --data radiographs/

Images are embedded once; then a cosine kNN probe and a logistic-regression probe are
trained on 1%, 10%, 20% and 50% of the images (stratified), tested on the rest, and
repeated. ``--data`` takes a folder with one sub-folder per class; without it the synthetic
radiograph phantoms are used (drawings for demos, not real radiographs).
"""

from __future__ import annotations

import argparse

from codafeat import CodaEncoder
from codafeat.data.manifest import scan_organ_folder
from codafeat.fewshot.probes import knn_probe, linear_probe
from codafeat.phantoms import make_radiograph_phantoms


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", default=None, help="codafeat weights file or installed name (default: random init)"
    )
    parser.add_argument("--backbone", default="test_convnext", help="timm backbone without --weights (default: tiny)")
    parser.add_argument("--data", default=None, help="folder with one sub-folder per class (default: phantoms)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the weights' (64 for phantoms)")
    parser.add_argument("--n-per-organ", type=int, default=50, help="phantoms per organ")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 0.2, 0.5])
    parser.add_argument("--n-repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    if args.data:
        images, labels = scan_organ_folder(args.data)
    else:
        images, labels, _ = make_radiograph_phantoms(args.n_per_organ, image_size=args.image_size or 64, random_state=0)
    encoder = CodaEncoder(
        weights=args.weights,
        backbone=None if args.weights else args.backbone,
        image_size=args.image_size or (None if args.weights else 64),
        device=args.device,
        random_state=0,
    ).fit()
    embeddings = encoder.transform(images)
    report = knn_probe(embeddings, labels, args.fractions, n_repeats=args.n_repeats) + linear_probe(
        embeddings, labels, args.fractions, n_repeats=args.n_repeats
    )
    print(f"{len(labels)} images, {len(set(labels))} classes, {embeddings.shape[1]}-d embeddings\n")
    print(report)  # a markdown table; report.to_frame() gives a pandas DataFrame
    return report


if __name__ == "__main__":
    main()
