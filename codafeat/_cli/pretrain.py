"""``codafeat pretrain DIR --out model.safetensors``: CodaPretrainer from the command line.

Every estimator parameter is an option (``--batch-size``, ``--lambda-inter`` ...), with
the estimator's defaults. Under ``torchrun`` (``torchrun --nproc_per_node=8 -m codafeat
pretrain DIR ...``) each process runs this command; rank 0 writes the file.
"""

from __future__ import annotations

import argparse
import inspect
import logging

NAME = "pretrain"
HELP = "pretrain a Coda model on a folder of radiographs (one subfolder per organ)"
DESCRIPTION = __doc__

_SKIP = {"verbose"}

logger = logging.getLogger(__name__)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..pretrain import CodaPretrainer

    parser.add_argument("data", help="folder with one subfolder per organ, or a CSV manifest (path, organ)")
    parser.add_argument("--out", required=True, help="output weights file (.safetensors)")
    parser.add_argument("--history", default=None, help="also write the per-epoch history as JSON")
    parser.add_argument("--verbose", type=int, default=1, help="progress bar (1) or quiet (0)")
    sig = inspect.signature(CodaPretrainer.__init__)
    for name, p in sig.parameters.items():
        if name == "self" or name in _SKIP:
            continue
        default = p.default
        opt = _option(name)
        if isinstance(default, bool):
            parser.add_argument(opt, action=argparse.BooleanOptionalAction, default=default, help=f"default: {default}")
        elif isinstance(default, tuple):
            parser.add_argument(opt, type=type(default[0]), nargs=len(default), default=default, metavar=("LOW", "HIGH"), help=f"default: {default}")
        elif name == "random_state":
            parser.add_argument(opt, type=int, default=None, help="seed (default: none)")
        elif default is None:
            parser.add_argument(opt, default=None, help="default: none")
        else:
            parser.add_argument(opt, type=type(default), default=default, help=f"default: {default}")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .._train.dist import launched_by_torchrun
    from ..pretrain import CodaPretrainer

    params = {k: getattr(args, k) for k in CodaPretrainer().get_params() if hasattr(args, k)}
    for k in ("global_scale", "local_scale"):
        params[k] = tuple(params[k])
    params["verbose"] = args.verbose
    est = CodaPretrainer(**params).fit(args.data)
    rank0 = not launched_by_torchrun() or int(__import__("os").environ.get("RANK", "0")) == 0
    if rank0:
        path = est.save(args.out)
        logger.info("wrote %s (%d images, %d organs, %d epochs)", path, est.n_images_, len(est.organs_), est.epochs)
        if args.history:
            Path(args.history).write_text(json.dumps(est.history_, indent=2))
    return 0
