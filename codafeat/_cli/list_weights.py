"""``codafeat list-weights``: names of installed weights packages."""

from __future__ import annotations

import argparse

NAME = "list-weights"
HELP = "list the weights registered by installed packages"
DESCRIPTION = (
    "List the weights registered by installed packages (entry-point group codafeat.weights), "
    "one per line: NAME, backbone, image size and file, tab-separated. Broken entries are "
    "listed with their error and make the command exit with status 1."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import sys

    from ..formats.weights import WeightsError, list_weights, read_config, registered_path

    names = list_weights()
    if not names:
        sys.stdout.write("no weights installed (pip install a codafeat-weights-* package)\n")
    status = 0
    for name in names:
        try:
            path = registered_path(name)
            config = read_config(path)
        except WeightsError as exc:
            sys.stdout.write(f"{name}\tERROR\t{exc}\n")
            status = 1
            continue
        sys.stdout.write(f"{name}\t{config['backbone']}\t{config['image_size']}\t{path}\n")
    return status
