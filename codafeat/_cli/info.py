"""``codafeat info W``: the model card of a weights file, folder or installed name."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "print the model card of weights (a file, a timm folder or an installed name)"
DESCRIPTION = (
    "Print the model card of W as Markdown: backbone, input, licence, intended use, the "
    "training data summary and how the weights were trained. W is a codafeat weights file, "
    "a folder written by `codafeat export`, or the name of installed weights. Only the "
    "header is read for files; no tensor is loaded."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="W", help="a weights file, a weights folder, or an installed weights name")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..formats.model_card import model_card
    from ..formats.timm import TIMM_WEIGHTS, load_any
    from ..formats.weights import WeightsError, list_weights, read_config

    spec = args.weights
    name = spec if spec in list_weights() else None
    try:
        config = read_config(Path(spec) / TIMM_WEIGHTS if Path(spec).is_dir() else spec)
    except WeightsError:
        if not Path(spec).is_dir():
            raise
        config = load_any(spec)[1]  # a plain timm folder: its config.json describes it
    sys.stdout.write(model_card(config, name=name))
    return 0
