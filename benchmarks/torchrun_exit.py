"""Do ``torchrun`` jobs exit 0 whenever their outputs are complete? (issue 27, item 1)

    python benchmarks/torchrun_exit.py --runs 50                 # embed and DDP pretraining, 50 runs each
    python benchmarks/torchrun_exit.py --runs 3 --jobs embed     # a quick look

Each run is a fresh ``torchrun --standalone --nproc_per_node 2`` on the CPU (gloo, one thread
per process): ``codafeat embed`` of 24 tiny PNGs, and ``codafeat pretrain`` of a tiny
``test_convnext`` for one epoch (DDP). A run counts as clean when it exits 0 and its output
is complete; the script prints, per job, how many runs exited 0, how many wrote a complete
output but exited non-zero (the fault of issue 27: a finished job reported as failed), and
the first lines of the first such failure. The counts go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: A ``test_convnext`` pretraining of one epoch (the tests' tiny model), with no progress bar.
TINY_FLAGS = "--backbone test_convnext --image-size 32 --local-size 32 --n-local-crops 2 --head-out-dim 64 \
--head-hidden-dim 32 --head-bottleneck-dim 16 --batch-size 8 --epochs 1 --warmup-epochs 0 --verbose 0".split()


def write_inputs(root: Path) -> tuple[Path, Path]:
    """24 PNGs in two organ folders and a random ``test_convnext`` weights file."""
    from codafeat import CodaEncoder
    from codafeat.data.manifest import write_image_folder
    from codafeat.phantoms import make_radiograph_phantoms

    X, organ = make_radiograph_phantoms(
        12, organs=("chest", "hand"), image_size=32, random_state=0, return_variants=False
    )
    data = write_image_folder(X, organ, root / "data")
    weights = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit().save(root / "w.safetensors")
    return data, weights


def command(job: str, data: Path, weights: Path, out: Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if job == "embed":
        args = ["embed", str(data), "--weights", str(weights), "--out", str(out / "e.npy"), "--device", "cpu"]
        args += ["--batch-size", "4", "--verbose", "0"]
    else:
        args = ["pretrain", str(data), "--out", str(out / "p.safetensors"), "--device", "cpu", *TINY_FLAGS]
    return [*launcher, "-m", "codafeat", "-q", *args]


def complete(job: str, out: Path) -> bool:
    if job == "embed":
        f = out / "e.npy"
        return f.exists() and np.load(f).shape[0] == 24
    f = out / "p.safetensors"
    return f.exists() and f.stat().st_size > 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--jobs", default="embed,pretrain")
    a = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        data, weights = write_inputs(Path(tmp))
        for job in a.jobs.split(","):
            ok = finished_but_failed = other = 0
            first = ""
            t0 = time.perf_counter()
            for i in range(a.runs):
                out = Path(tmp) / f"{job}{i}"
                out.mkdir()
                r = subprocess.run(command(job, data, weights, out), env=env, capture_output=True, text=True)
                done = complete(job, out)
                if r.returncode == 0 and done:
                    ok += 1
                    continue
                if done:
                    finished_but_failed += 1
                else:
                    other += 1
                said = [
                    ln for ln in r.stderr.splitlines() if "terminate called" in ln or "ERROR" in ln or "Error" in ln
                ]
                first = first or f"run {i}: exit {r.returncode}\n" + "\n".join(said[:12])
            failures += finished_but_failed + other
            print(
                f"{job}: {ok} of {a.runs} runs exited 0 with a complete output; "
                f"{finished_but_failed} complete but exited non-zero; {other} incomplete "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            if first:
                print(first)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
