"""Distributed embedding on the CPU (issue 21): ``torchrun --nproc_per_node=2`` against one process.

    python benchmarks/embed_ranks.py                 # 1024 PNGs, convnext_atto at 128 px: a few minutes
    python benchmarks/embed_ranks.py --dry-run       # 16 PNGs, test_convnext at 32 px (tested in CI)

It writes N synthetic 8-bit PNG radiographs and a randomly initialised weights file, then
times ``codafeat embed`` (a fresh process each, start-up and weights loading included,
``--num-workers 0`` so that each process decodes its own images on its own core):

* **one process, one thread** (``OMP_NUM_THREADS=1``): one core's worth;
* **torchrun, 2 processes, one thread each**: the distributed command on two cores;
* **one process, two threads**: the single-process command given both cores (intra-op
  threads), the fair same-hardware baseline.

The goal (issue 21): 2 processes reach at least 1.6 x one process. All three outputs must
be the same bytes. The figures go to benchmarks/RESULTS.md.
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
FULL = dict(n=1024, side=256, backbone="convnext_atto", image_size=128, batch_size=32)
DRY = dict(n=16, side=64, backbone="test_convnext", image_size=32, batch_size=4)


def write_inputs(folder: Path, cfg: dict) -> Path:
    """``cfg['n']`` PNGs in ``folder/images`` and a weights file; returns the weights path."""
    from PIL import Image

    from codafeat import CodaEncoder

    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    side = cfg["side"]
    ramp = np.linspace(40, 200, side)[None, :]
    for i in range(cfg["n"]):
        img = np.clip(rng.normal(0, 20, (side, side)) + ramp + 30 * np.sin(i + np.arange(side)[:, None] / 9), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(images / f"{i:05d}.png")
    return CodaEncoder(backbone=cfg["backbone"], image_size=cfg["image_size"], random_state=0).fit().save(
        folder / "w.safetensors")


def run(folder: Path, weights: Path, out: Path, cfg: dict, *, nproc: int, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "codafeat", "-q", "embed", str(folder / "images"), "--weights",
           str(weights), "--out", str(out), "--device", "cpu", "--num-workers", "0", "--batch-size",
           str(cfg["batch_size"]), "--verbose", "0"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed:\n{r.stderr[-3000:]}")
    return wall


def measure(cfg: dict, workdir: Path) -> dict:
    weights = write_inputs(workdir, cfg)
    runs = {
        "one process, 1 thread": dict(nproc=1, threads=1),
        "torchrun, 2 processes x 1 thread": dict(nproc=2, threads=1),
        "one process, 2 threads": dict(nproc=1, threads=2),
    }
    walls, outputs = {}, {}
    for i, (name, how) in enumerate(runs.items()):
        outputs[name] = workdir / f"out{i}.npy"
        walls[name] = run(workdir, weights, outputs[name], cfg, **how)
    blobs = {p.read_bytes() for p in outputs.values()}
    return {"walls": walls, "same_bytes": len(blobs) == 1}


def markdown(cfg: dict, r: dict, command: str) -> str:
    w = r["walls"]
    one, two, both = w["one process, 1 thread"], w["torchrun, 2 processes x 1 thread"], w["one process, 2 threads"]
    speedup = one / two
    lines = [
        f"### Distributed embedding: {cfg['n']} PNGs of {cfg['side']} px, {cfg['backbone']} at {cfg['image_size']} px",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Command: `{command}`. Wall time of the whole command (process start, weights, decoding, "
        f"forward passes, writing), `--num-workers 0 --batch-size {cfg['batch_size']}`.",
        "",
        "| run | wall s | images/s | vs one process, 1 thread |",
        "|---|---|---|---|",
    ]
    for name, wall in w.items():
        lines.append(f"| {name} | {wall:.1f} | {cfg['n'] / wall:.1f} | {one / wall:.2f} x |")
    lines += [
        "",
        f"Goal: 2 processes at least 1.6 x one process: {'met' if speedup >= 1.6 else 'not met'} "
        f"({speedup:.2f} x). Against one process given both cores as threads: {both / two:.2f} x. "
        f"All three outputs the same bytes: {r['same_bytes']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="16 tiny images (for CI)")
    ap.add_argument("--n", type=int, default=None, help=f"images (default: {FULL['n']})")
    args = ap.parse_args(argv)
    cfg = dict(DRY if args.dry_run else FULL)
    if args.n:
        cfg["n"] = args.n
    with tempfile.TemporaryDirectory(prefix="codafeat-embed-ranks-") as tmp:
        result = measure(cfg, Path(tmp))
    command = "python benchmarks/embed_ranks.py" + (" --dry-run" if args.dry_run else
                                                   (f" --n {cfg['n']}" if args.n else ""))
    print(markdown(cfg, result, command))
    return 0 if result["same_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())
