"""``codafeat list-weights``: names of installed weights packages."""

from __future__ import annotations

import argparse

NAME = "list-weights"
HELP = "list the weights registered by installed packages"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import sys

    from ..weights import list_weights, registered_path

    names = list_weights()
    if not names:
        sys.stdout.write("no weights installed (pip install a codafeat-weights-* package)\n")
    for name in names:
        sys.stdout.write(f"{name}\t{registered_path(name)}\n")
    return 0
