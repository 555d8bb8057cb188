"""``codafeat package-weights``: build a pip-installable wheel from a weights file."""

from __future__ import annotations

import argparse

NAME = "package-weights"
HELP = "build a wheel that installs a weights file under a name"
DESCRIPTION = (
    "Build codafeat_weights_NAME-VERSION-py3-none-any.whl, an ordinary wheel that ships "
    "FILE and registers it as NAME: after `pip install` of the wheel (from the file or any "
    "package index), CodaEncoder(weights=NAME) loads it. Prints the path of the wheel."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.safetensors", help="a codafeat weights file")
    parser.add_argument(
        "--name", required=True, help="the weights name users pass as weights=NAME (letters, digits, . _ -)"
    )
    parser.add_argument("--version", default="0.1.0", help="PEP 440 version of the package (default: 0.1.0)")
    parser.add_argument("--out", default="dist", metavar="DIR", help="output folder (default: dist)")
    parser.add_argument(
        "--license", default=None, help="licence of the weights (e.g. cc-by-4.0; default: the file's own)"
    )
    parser.add_argument("--intended-use", default=None, help="intended use (default: the file's own)")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from .._fileio import check_outputs
    from ..formats.wheel import build_weights_wheel, distribution_name

    check_outputs({"--out": args.out}, inputs=[args.file])

    wheel = build_weights_wheel(
        args.file,
        name=args.name,
        version=args.version,
        out_dir=args.out,
        license=args.license,
        intended_use=args.intended_use,
    )
    logging.getLogger(__name__).info(
        "built %s: `pip install %s`, then CodaEncoder(weights=%r)", distribution_name(args.name), wheel, args.name
    )
    sys.stdout.write(f"{wheel}\n")
    return 0
