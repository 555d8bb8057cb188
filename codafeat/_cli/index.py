"""``codafeat index DATA... --weights W --out IDX/``: a similar-case index of an archive.

Every image under the inputs (files and folders, recursive) is embedded with the encoder
and written, chunk by chunk, into the folder ``--out`` (see :class:`codafeat.index.CodaIndex`):
``vectors.bin``, ``paths.txt``, ``encoder.safetensors`` and ``index.json``. Search it with
``codafeat search IDX/ QUERY...``.
"""

from __future__ import annotations

import argparse
import logging

from .embed import add_encoder_arguments, collect_images, make_encoder

NAME = "index"
HELP = "build a similar-case search index of image files and folders"
DESCRIPTION = __doc__

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="PATH", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, metavar="IDX", help="index folder (new, or an earlier index)")
    parser.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine", help="default: cosine")
    parser.add_argument(
        "--backend",
        choices=("auto", "exact", "faiss", "faiss-hnsw"),
        default="auto",
        help="search backend recorded with the index (default: auto, FAISS when installed)",
    )
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored vectors")
    add_encoder_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .._fileio import check_outputs
    from ..index import CodaIndex

    check_outputs({"--out": args.out}, inputs=args.inputs)
    paths = collect_images(args.inputs)
    index = CodaIndex(
        encoder=make_encoder(args, normalize=args.metric == "cosine"),
        metric=args.metric,
        backend=args.backend,
        dtype=args.dtype,
        verbose=args.verbose,
    ).fit(paths)
    index.save(args.out)
    logger.info(
        "indexed %d image(s) (%d-dimensional %s vectors) in %s%s",
        index.n_vectors_,
        index._vectors.dim,
        args.metric,
        args.out,
        f"; {len(index.skipped_)} unreadable image(s) left out" if index.skipped_ else "",
    )
    return 0
