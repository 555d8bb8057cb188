"""``codafeat pretrain DIR --out model.safetensors``: CodaPretrainer from the command line.

Every estimator parameter is an option (``--batch-size``, ``--lambda-inter`` ...), with
the estimator's defaults. Under ``torchrun`` (``torchrun --nproc_per_node=8 -m codafeat
pretrain DIR ...``) each process runs this command; rank 0 writes the file.
"""

from __future__ import annotations

import argparse
import logging

NAME = "pretrain"
HELP = "pretrain a Coda model on a folder of radiographs (one subfolder per organ)"
DESCRIPTION = __doc__

logger = logging.getLogger(__name__)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .._defaults import PRETRAIN_PARAMS

    parser.add_argument(
        "data", help="folder with one subfolder per organ, or a manifest (.csv or .parquet: path, organ)"
    )
    parser.add_argument("--out", required=True, help="output weights file (.safetensors)")
    parser.add_argument("--history", default=None, help="also write the per-epoch history as JSON")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out / --history that is not codafeat weights / a history",
    )
    parser.add_argument("--verbose", type=int, default=1, help="progress bar (1) or quiet (0)")
    for name, row in PRETRAIN_PARAMS.items():  # the parameter table: no torch import for --help
        if not row.cli:
            continue
        opt, default = _option(name), row.default
        if isinstance(default, bool):
            parser.add_argument(opt, action=argparse.BooleanOptionalAction, default=default, help=f"default: {default}")
        elif isinstance(default, tuple):
            metavar = ("LOW", "HIGH") if len(default) == 2 else None
            parser.add_argument(
                opt,
                type=type(default[0]),
                nargs=len(default),
                default=default,
                metavar=metavar,
                help=f"default: {default}",
            )
        elif name == "random_state":
            parser.add_argument(opt, type=int, default=None, help="seed (default: none)")
        elif default is None:
            parser.add_argument(opt, default=None, help="default: none")
        else:
            parser.add_argument(opt, type=type(default), default=default, help=f"default: {default}")


def _rescue_paths(out: str, checkpoint_dir: str | None) -> list[str]:
    """Where the trained model goes when ``--out`` cannot be written after training."""
    import os
    import tempfile
    from pathlib import Path

    name = f"{Path(out).stem or 'coda'}.rescued-{os.getpid()}.safetensors"
    places = [checkpoint_dir] if checkpoint_dir else []
    places += [os.getcwd(), tempfile.gettempdir()]
    return [str(Path(p) / name) for p in places]


def _inputs(data: str) -> list[str]:
    """The inputs an output must not overwrite: the folder or manifest, and the files a manifest lists."""
    import os

    if not os.path.isfile(data):
        return [data]
    from ..data.manifest import read_manifest

    try:
        paths, _ = read_manifest(data, check_files=False)
    except (ValueError, OSError, KeyError, ImportError):
        paths = []  # an unreadable manifest is reported by fit, by name
    return [data, *paths]


def _refuse_existing(what: str, path) -> str | None:
    """``None`` when the existing file at ``path`` may be replaced by ``what``, else what it should be."""
    import json

    if what == "--out":
        from ..formats.weights import read_config

        try:
            read_config(path)
        except Exception:  # any unreadable or foreign file
            return "codafeat weights"
        return None
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return "a training history (JSON)"
    return None


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from .._fileio import atomic_write_bytes, check_outputs, check_writable
    from .._train.dist import launched_by_torchrun
    from ..pretrain import CodaPretrainer

    rank0 = not launched_by_torchrun() or int(os.environ.get("RANK", "0")) == 0
    if rank0:  # fail now, not after the last epoch
        check_outputs(
            {"--out": args.out, "--history": args.history},
            inputs=_inputs(args.data),
            refuse_existing=_refuse_existing,
            overwrite=args.overwrite,
        )
        check_writable(args.out, what="--out")
        if args.history:
            check_writable(args.history, what="--history")
    params = {k: getattr(args, k) for k in CodaPretrainer().get_params() if hasattr(args, k)}
    for k in ("global_scale", "local_scale", "gamma", "blur_prob", "blur_sigma"):
        params[k] = tuple(params[k])
    params["verbose"] = args.verbose
    est = CodaPretrainer(**params).fit(args.data)
    if not rank0:
        return 0
    history = json.dumps(est.history_, indent=2).encode("utf-8")
    try:
        path = est.save(args.out)
    except OSError as exc:
        for rescue in _rescue_paths(args.out, params.get("checkpoint_dir")):
            try:
                est.save(rescue)
            except OSError:
                continue
            logger.error("could not write %s (%s); the trained model was saved to %s instead", args.out, exc, rescue)
            return 1
        raise OSError(exc.errno, f"could not write {args.out} nor any fallback path ({exc})") from exc
    logger.info("wrote %s (%d images, %d organs, %d epochs)", path, est.n_images_, len(est.organs_), est.epochs)
    if args.history:
        atomic_write_bytes(args.history, history)
    return 0
