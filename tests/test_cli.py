"""The ``codafeat`` entry point (codafeat/cli.py); each command is tested in tests/_cli/."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_command_ends_a_torchrun_process_after_atexit_without_finalisation(tmp_path):
    """Issue 27, item 1: under torchrun the command exits by os._exit once its work is done.

    The ``atexit`` handlers still run (and the logs are flushed), but the interpreter's
    finalisation, where Gloo's threads could abort a finished process, does not: an object
    that speaks when collected at finalisation stays silent, and the exit code is main's.
    """
    script = (
        "import atexit, sys, torch, runpy\n"
        "class Speaks:\n"
        "    def __del__(self): print('finalised', flush=True)\n"
        "keep = Speaks()\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "sys.argv = ['codafeat', 'list-weights']\n"
        "runpy.run_module('codafeat', run_name='__main__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    plain = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "atexit ran" in plain.stdout and "finalised" in plain.stdout
    ranked = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(env, WORLD_SIZE="2", RANK="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    assert "atexit ran" in ranked.stdout and "finalised" not in ranked.stdout
