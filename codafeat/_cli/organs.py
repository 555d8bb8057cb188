"""``codafeat organs DATA``: the organ each file would get in pretraining, and where it came from.

DATA is what ``codafeat pretrain`` takes: a folder with one sub-folder per organ, or a
manifest (.csv or .parquet, columns path and organ); with ``--organ-from dicom`` a folder
or manifest of DICOM files labelled by their headers. The options mean what they mean
for ``pretrain``, so the answer is what pretraining would use.

Output (stdout): one tab-separated row per file (path, organ, source, raw value), unless
``--summary``; then a table of the raw values with their organ, source and number of
files, and the values no organ was found for. Sources: folder, manifest, tag (the
BodyPartExamined table), description (a keyword of StudyDescription, SeriesDescription or
ProtocolName), user mapping (``--organ-map``), unknown, unreadable. With ``--cache-dir``
(the pretraining cache folder) DICOM headers are kept in its tag index: a second run over
unchanged files reads no header.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

NAME = "organs"
HELP = "show the organ each file would get in pretraining, and where it came from"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .._defaults import PRETRAIN

    parser.add_argument("data", help="folder (one sub-folder per organ, or DICOM files) or manifest (.csv, .parquet)")
    parser.add_argument(
        "--organ-from",
        choices=("folder", "dicom"),
        default=PRETRAIN["organ_from"],
        help=f"labels from sub-folders / the manifest, or DICOM headers (default: {PRETRAIN['organ_from']})",
    )
    parser.add_argument(
        "--organ-map",
        default=None,
        metavar="CSV",
        help="your mapping of DICOM values to organs, a CSV with columns raw,organ (checked first)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="keep DICOM headers in this folder's tag index (the pretraining cache_dir)",
    )
    parser.add_argument("--summary", action="store_true", help="print only the table of values, not every file")


def _cell(text: Any) -> str:
    """A value on one line of a tab-separated row (tabs and line breaks as escapes)."""
    return str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_report(files: Sequence[Any], out: TextIO, *, per_file: bool = True) -> None:
    """Per-file rows (optional), the raw-value table, and the unmapped values."""
    from ..data.organs import organ_table

    if per_file:
        out.write("path\torgan\tsource\traw\n")
        for f in files:
            out.write(f"{_cell(f.path)}\t{_cell(f.organ or '')}\t{f.source}\t{_cell(f.raw)}\n")
        out.write("\n")
    rows = organ_table(files)
    width = max([len(repr(r["raw"])) for r in rows] + [9])
    out.write(f"{'raw value':<{width}}  {'organ':<16} {'source':<13} files\n")
    for r in rows:
        out.write(f"{_cell(repr(r['raw'])):<{width}}  {_cell(r['organ'] or '-'):<16} {r['source']:<13} {r['count']}\n")
    organs = Counter(f.organ for f in files if f.organ is not None)
    out.write(
        f"\n{sum(organs.values())} of {len(files)} file(s) labelled, {len(organs)} organ(s): "
        + ", ".join(f"{o} {n}" for o, n in sorted(organs.items()))
        + "\n"
    )
    unknown = Counter(f.raw for f in files if f.source == "unknown")
    if unknown:
        out.write(
            f"unmapped: {sum(unknown.values())} file(s), values "
            + ", ".join(f"{_cell(repr(raw))} ({n})" for raw, n in unknown.most_common())
            + "\n"
        )
    unreadable = [f for f in files if f.source == "unreadable"]
    if unreadable:
        out.write(f"unreadable: {len(unreadable)} file(s), e.g. {unreadable[0].path!r}: {unreadable[0].raw}\n")


def run(args: argparse.Namespace) -> int:
    from ..data.organs import describe_organs

    if args.organ_map is not None and args.organ_from != "dicom":
        raise ValueError("--organ-map applies to --organ-from dicom (DICOM header values)")
    files = describe_organs(args.data, organ_from=args.organ_from, organ_map=args.organ_map, cache_dir=args.cache_dir)
    write_report(files, sys.stdout, per_file=not args.summary)
    return 0
