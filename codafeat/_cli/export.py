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
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing DIR/model.safetensors or DIR/config.json of another kind",
    )


def _refuse_existing(what: str, path) -> str | None:
    """``None`` when the existing file may be replaced: a safetensors file, a JSON config."""
    import json

    if path.name == "config.json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return "a JSON config"
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception:  # safetensors raises several types for a foreign file
        return "a safetensors checkpoint"


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from .._fileio import check_outputs
    from ..formats.timm import export_timm

    out = os.path.expanduser(args.out)
    check_outputs(
        {
            "--out model.safetensors": os.path.join(out, "model.safetensors"),
            "--out config.json": os.path.join(out, "config.json"),
        },
        inputs=[args.weights] if os.path.exists(args.weights) else [],
        refuse_existing=_refuse_existing,
        overwrite=args.overwrite,
    )

    out = export_timm(args.weights, args.out, license=args.license)
    sys.stdout.write(f"{out}\n")
    return 0
