"""``codafeat search IDX/ QUERY... --k 10 [--html page.html]``: the archived images nearest each query.

The queries (image files and folders) are embedded with the index's own encoder and
searched. Each query's neighbours are printed as tab-separated lines (query, rank,
distance, archived image). ``--html`` also writes a page that shows every query beside its
neighbours as thumbnails, with distances and file names; the thumbnails are embedded in
the page, so it works offline and can be sent as one file.
"""

from __future__ import annotations

import argparse
import logging
import sys

NAME = "search"
HELP = "find the archived images most like query images in an index (and draw them as HTML)"
DESCRIPTION = __doc__

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="IDX", help="an index folder written by codafeat index")
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="query image files and/or folders")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    parser.add_argument("--html", default=None, metavar="PAGE", help="also write an offline HTML page of the results")
    parser.add_argument("--thumbnail", type=int, default=160, help="thumbnail side in the page, px (default: 160)")
    parser.add_argument(
        "--backend", choices=("auto", "exact", "faiss", "faiss-hnsw"), default=None, help="default: the index's"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --html that is not a page")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._fileio import check_outputs
    from ..index import CodaIndex
    from ..plot import neighbours_html
    from .embed import collect_images

    if args.html:
        check_outputs(
            {"--html": args.html},
            inputs=[args.index, *args.queries],
            refuse_existing=lambda what, p: None if p.suffix.lower() in (".html", ".htm") else "an HTML page",
            overwrite=args.overwrite,
        )
    folder = Path(args.index)
    index = CodaIndex.load(folder, device=args.device, **({"backend": args.backend} if args.backend else {}))
    queries = collect_images(args.queries)
    result = index.search(queries, k=min(args.k, index.n_vectors_))
    out = sys.stdout
    out.write("query\trank\tdistance\timage\n")
    for q, dists, names in zip(queries, result.distances, result.paths):
        for rank, (d, name) in enumerate(zip(dists, names), start=1):
            out.write(f"{q}\t{rank}\t{d:.4f}\t{name}\n")
    if args.html:
        neighbours_html(
            queries,
            result.paths,
            result.distances,
            args.html,
            title=f"Similar cases in {folder.name}",
            metric=index.metric,
            thumbnail=args.thumbnail,
        )
        logger.info("wrote %s", args.html)
    return 0
