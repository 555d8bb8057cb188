"""Zero-shot organ analysis: do the embeddings separate organs, and views within an organ?
=======================================================================================

Run it::

    python examples/zero_shot_plot.py                             # tiny random encoder
    python examples/zero_shot_plot.py --weights my_coda.safetensors --out coda_tsne.png

Embeds the synthetic radiograph phantoms (drawings for demos, not real radiographs) without
any training on them, prints organ separation (leave-one-out kNN accuracy, NMI/ARI of
k-means, silhouette) and the within-organ variant separation, and writes a t-SNE picture
like the paper's Fig. 2 (colour = organ, marker = view or side). Needs matplotlib
(``pip install "codafeat[plot]"``).
"""

from __future__ import annotations

import argparse

from codafeat import CodaEncoder
from codafeat.analysis import organ_separation, plot_embedding, variant_separation
from codafeat.phantoms import make_radiograph_phantoms


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", default=None, help="codafeat weights file or installed name (default: random init)"
    )
    parser.add_argument("--backbone", default="test_convnext", help="timm backbone without --weights (default: tiny)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-per-organ", type=int, default=40)
    parser.add_argument("--method", choices=("tsne", "pca"), default="tsne")
    parser.add_argument("--out", default="zero_shot_tsne.png", help="PNG to write")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    images, organs, variants = make_radiograph_phantoms(args.n_per_organ, image_size=args.image_size, random_state=0)
    encoder = CodaEncoder(
        weights=args.weights,
        backbone=None if args.weights else args.backbone,
        image_size=args.image_size,
        device=args.device,
        random_state=0,
    ).fit()
    embeddings = encoder.transform(images)

    organ = organ_separation(embeddings, organs)
    variant = variant_separation(embeddings, organs, variants)
    print(
        "organ separation:   " + ", ".join(f"{k} {organ[k]:.3f}" for k in ("knn_accuracy", "nmi", "ari", "silhouette"))
    )
    print("variant separation: " + ", ".join(f"{k} {v:.3f}" for k, v in variant["mean"].items()))
    for name, r in variant["per_group"].items():
        print(f"  {name:7s} kNN {r['knn_accuracy']:.3f}  ARI {r['ari']:.3f}")
    path = plot_embedding(
        embeddings,
        organs,
        args.method,
        args.out,
        variants=variants,
        title=f"{'Coda' if args.weights else 'random init'} embeddings of phantoms",
    )
    print(f"wrote {path}")
    return organ, variant, path


if __name__ == "__main__":
    main()
