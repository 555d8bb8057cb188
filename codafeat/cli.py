"""The ``codafeat`` command. Each sub-command lives in ``codafeat/_cli/<name>.py``.

A sub-command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._version import __version__

#: Exceptions a user's input or machine can cause (bad data or settings, files, a diverging
#: run, missing extras, out of memory): one ERROR line and exit code 1, no traceback
#: (``CODAFEAT_DEBUG=1`` shows it). Ctrl-C: one line, exit code 130.
USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError, TypeError, RuntimeError, MemoryError)

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "pretrain",
    "organs",
    "embed",
    "probe",
    "index",
    "search",
    "export",
    "info",
    "package_weights",
    "list_weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codafeat",
        description="Coda foundation models for radiographs: pretrain, embed, probe, package weights.",
    )
    parser.add_argument("--version", action="version", version=f"codafeat {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMANDS:
        try:
            mod = importlib.import_module(f"codafeat._cli.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"codafeat._cli.{mod_name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``codafeat`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    log = logging.getLogger("codafeat")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("CODAFEAT_DEBUG"):
            raise
        log.error("%s", exc)
        return 1


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (``codafeat`` and ``python -m codafeat``): :func:`main`, then exit.

    Under ``torchrun`` the process ends with ``os._exit`` once :func:`main` has returned, its
    outputs written and the process group destroyed, after the ``atexit`` handlers and a
    flush of the logs and standard streams: the interpreter's own finalisation is skipped.
    There, Gloo's worker threads can still be releasing the last collective's tensors while
    the interpreter is torn down, and the process aborts (``terminate called without an
    active exception``, SIGABRT) after finishing its work, so ``torchrun`` reports a failed
    job (pytorch/pytorch#190489; an upstream fix, pytorch/pytorch#179291, was abandoned).
    """
    code = main(argv)
    if _launched_by_torchrun():
        _exit_now(code)
    sys.exit(code)


def _launched_by_torchrun() -> bool:
    if "torch" not in sys.modules:  # nothing distributed ran (``--help``, a failed parse)
        return False
    from ._train.dist import launched_by_torchrun

    return launched_by_torchrun()


def _exit_now(code: int) -> NoReturn:
    """Run the ``atexit`` handlers, flush logs and streams, and end the process without finalisation."""
    import atexit

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
