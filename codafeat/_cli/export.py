"""``codafeat export W --format timm --out DIR``: weights in timm's / the hub's folder layout."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "write weights as a timm / Hugging Face hub folder (model.safetensors + config.json)"
DESCRIPTION = (
    "Write the weights W (a codafeat file, an installed weights name or a weights folder) as "
    "DIR/model.safetensors and DIR/config.json in timm's layout, so that "
    "timm.create_model('local-dir:DIR', pretrained=True) loads the backbone without codafeat, "
    "and DIR can be uploaded to a model hub as it is. Prints DIR."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="W", help="a codafeat weights file, an installed weights name, or a folder")
    parser.add_argument("--format", choices=("timm",), default="timm", help="output layout (default: timm)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--license", default=None, help="licence recorded in config.json (default: the weights' own)")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..timm_io import export_timm

    out = export_timm(args.weights, args.out, license=args.license)
    sys.stdout.write(f"{out}\n")
    return 0
