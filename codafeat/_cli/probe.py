"""``codafeat probe --weights W --data DIR``: few-shot kNN and linear probes on frozen embeddings.

The images (a folder with one sub-folder per class, or a CSV manifest) are embedded once;
then cosine-kNN and logistic-regression probes are trained on ``--shots`` images per class
or on ``--fractions`` of the data (default: the paper's 1%, 10%, 20%, 50%), tested on the
rest, ``--n-repeats`` times. The table (mean ± std; ROC AUC for two classes, accuracy
otherwise) goes to standard output. ``--compare-random`` adds the same probes on a
randomly initialised encoder of the same architecture, the baseline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .embed import add_encoder_arguments, make_encoder

NAME = "probe"
HELP = "few-shot kNN / linear probes of Coda embeddings on a labelled image folder or CSV"
DESCRIPTION = __doc__

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with one sub-folder per class (or a .csv / .parquet manifest)")
    src.add_argument("--labels-csv", help="manifest (.csv or .parquet) with a path and a label column")
    parser.add_argument("--path-column", default="path", help="manifest column of image paths (default: path)")
    parser.add_argument("--label-column", default="organ", help="manifest column of labels (default: organ)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--shots", type=int, nargs="+", metavar="K", help="training images per class, e.g. 1 5 10")
    how.add_argument(
        "--fractions", type=float, nargs="+", metavar="F", help="training fractions (default: 0.01 0.1 0.2 0.5)"
    )
    parser.add_argument("--n-repeats", type=int, default=10, help="random draws per setting (default: 10)")
    parser.add_argument(
        "--probe", choices=("knn", "linear", "both"), default="both", help="which probes (default: both)"
    )
    parser.add_argument("--n-neighbors", type=int, default=5, help="k of the kNN probe (default: 5)")
    parser.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength of the linear probe")
    parser.add_argument(
        "--scoring", default=None, help="sklearn scoring (default: roc_auc for 2 classes, else accuracy)"
    )
    parser.add_argument("--random-state", type=int, default=0, help="seed of the draws (default: 0)")
    parser.add_argument("--compare-random", action="store_true", help="add rows for a randomly initialised encoder")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    add_encoder_arguments(parser)


def _load_data(args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    from ..data.manifest import is_manifest, read_manifest, scan_organ_folder

    if args.labels_csv is not None:
        return read_manifest(args.labels_csv, path_column=args.path_column, label_column=args.label_column)
    data = Path(args.data)
    if is_manifest(data):
        return read_manifest(data, path_column=args.path_column, label_column=args.label_column)
    return scan_organ_folder(data)


def _probe_rows(emb: np.ndarray, labels: np.ndarray, args: argparse.Namespace, prefix: str):
    from ..fewshot.probes import knn_probe, linear_probe

    common = dict(
        shots=args.shots,
        n_repeats=args.n_repeats,
        scoring=args.scoring,
        random_state=args.random_state,
    )
    fractions = args.fractions  # None: the paper's fractions, unless --shots
    report = None
    if args.probe in ("knn", "both"):
        report = knn_probe(
            emb, labels, fractions, n_neighbors=args.n_neighbors, name=f"{prefix}kNN (k={args.n_neighbors})", **common
        )
    if args.probe in ("linear", "both"):
        lin = linear_probe(emb, labels, fractions, C=args.C, name=f"{prefix}linear", **common)
        report = lin if report is None else report + lin
    return report


def _drop_nan_rows(emb: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(emb).all(axis=1)
    if not ok.all():
        logger.warning("%s: leaving out %d unreadable image(s) (see the warning above)", what, int((~ok).sum()))
    return emb[ok], labels[ok]


def run(args: argparse.Namespace) -> int:
    from ..fewshot.probes import format_table

    paths, labels = _load_data(args)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"probing needs at least two classes, found {classes.tolist()}")
    enc = make_encoder(args)
    emb, y = _drop_nan_rows(enc.transform(paths), labels, "coda")
    name = Path(str(args.weights)).stem
    report = _probe_rows(emb, y, args, f"{name} ")
    if args.compare_random:
        rnd = make_encoder(
            args,
            weights=None,
            backbone=enc.config_["backbone"],
            image_size=enc.image_size_,
            random_state=args.random_state,
        )
        remb, ry = _drop_nan_rows(rnd.transform(paths), labels, "random init")
        report = report + _probe_rows(remb, ry, args, "random init ")
    table = format_table(report)
    sys.stdout.write(f"{len(paths)} images, {len(classes)} classes\n\n{table}\n")
    if args.out:
        from .._fileio import atomic_write_bytes

        atomic_write_bytes(args.out, (table + "\n").encode("utf-8"))
        logger.info("wrote %s", args.out)
    return 0
