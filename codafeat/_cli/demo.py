"""``codafeat demo``: the first thing to run (see :mod:`codafeat.demo`)."""

from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "pretrain a small Coda model on built-in phantoms (or --data DIR) and report what it learned"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="a real organ-per-folder dataset instead of the phantoms")
    parser.add_argument("--out", default="codafeat-demo", help="output folder (default: codafeat-demo)")
    parser.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's)")
    parser.add_argument("--backbone", default=None, help="timm backbone (default: the demo's)")
    parser.add_argument("--n-per-organ", type=int, default=60, help="phantoms per organ for pretraining")
    parser.add_argument("--n-eval-per-organ", type=int, default=40, help="held-out phantoms per organ")
    parser.add_argument("--n-repeats", type=int, default=10, help="draws per few-shot setting")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    settings = {}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.backbone is not None:
        settings["backbone"] = args.backbone
    result = run_demo(
        args.out,
        data=args.data,
        n_per_organ=args.n_per_organ,
        n_eval_per_organ=args.n_eval_per_organ,
        settings=settings,
        n_repeats=args.n_repeats,
        random_state=args.random_state,
        verbose=args.verbose,
    )
    sys.stdout.write(result.summary() + "\n")
    return 0
