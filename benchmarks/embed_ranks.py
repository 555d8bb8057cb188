"""Distributed embedding on the CPU (issue 21): ``torchrun --nproc_per_node=2`` against one process.

    python benchmarks/embed_ranks.py                 # 4096 PNGs, convnext_atto at 128 px: about 3 minutes
    python benchmarks/embed_ranks.py --dry-run       # 16 PNGs, test_convnext at 32 px (tested in CI)

It writes N synthetic 8-bit PNG radiographs and a randomly initialised weights file, then
times ``codafeat embed`` (a fresh process each, start-up and weights loading included,
``--num-workers 0`` so that each process decodes its own images on its own core):

* **one process, one thread** (``OMP_NUM_THREADS=1``): one core's worth;
* **torchrun, 2 processes, one thread each**: the distributed command on two cores;
* **one process, two threads**: the single-process command given both cores (intra-op
  threads), the fair same-hardware baseline.

Each configuration runs twice, on all N images and on the first N/4, so that the fixed cost
of a command (process start, weights, ``torchrun``'s rendezvous) separates from the work:
the **marginal rate** is ``(3N/4) / (wall(N) - wall(N/4))`` images/s. The goal (issue 21):
2 processes reach at least 1.6 x one process. All outputs of a size must be the same
bytes. The figures go to benchmarks/RESULTS.md.
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
FULL = dict(n=4096, side=256, backbone="convnext_atto", image_size=128, batch_size=32)
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
    return (
        CodaEncoder(backbone=cfg["backbone"], image_size=cfg["image_size"], random_state=0)
        .fit()
        .save(folder / "w.safetensors")
    )


def run(
    folder: Path, weights: Path, out: Path, cfg: dict, *, nproc: int, threads: int, images: str = "images"
) -> float:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    cmd = [
        sys.executable,
        *launcher,
        "-m",
        "codafeat",
        "-q",
        "embed",
        str(folder / images),
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--batch-size",
        str(cfg["batch_size"]),
        "--verbose",
        "0",
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed:\n{r.stderr[-3000:]}")
    return wall


RUNS = {
    "one process, 1 thread": dict(nproc=1, threads=1),
    "torchrun, 2 processes x 1 thread": dict(nproc=2, threads=1),
    "one process, 2 threads": dict(nproc=1, threads=2),
}


def measure(cfg: dict, workdir: Path) -> dict:
    weights = write_inputs(workdir, cfg)
    quarter = workdir / "quarter"
    quarter.mkdir()
    n_small = cfg["n"] // 4
    for p in sorted((workdir / "images").iterdir())[:n_small]:
        os.link(p, quarter / p.name)
    walls, small, blobs = {}, {}, {"all": set(), "quarter": set()}
    for i, (name, how) in enumerate(RUNS.items()):
        walls[name] = run(workdir, weights, workdir / f"all{i}.npy", cfg, **how)
        small[name] = run(workdir, weights, workdir / f"quarter{i}.npy", cfg, images="quarter", **how)
        blobs["all"].add((workdir / f"all{i}.npy").read_bytes())
        blobs["quarter"].add((workdir / f"quarter{i}.npy").read_bytes())
    # a run whose extra images cost no measurable time (a dry run's noise) has no marginal rate
    marginal = {k: (cfg["n"] - n_small) / (walls[k] - small[k]) if walls[k] > small[k] else float("nan") for k in RUNS}
    return {
        "walls": walls,
        "small": small,
        "n_small": n_small,
        "marginal": marginal,
        "same_bytes": all(len(b) == 1 for b in blobs.values()),
    }


def markdown(cfg: dict, r: dict, command: str) -> str:
    w, m = r["walls"], r["marginal"]
    one, two, both = "one process, 1 thread", "torchrun, 2 processes x 1 thread", "one process, 2 threads"
    speedup = m[two] / m[one]
    lines = [
        f"### Distributed embedding: {cfg['n']} PNGs of {cfg['side']} px, {cfg['backbone']} at {cfg['image_size']} px",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Command: `{command}`. Wall time of the whole command (process start, weights, decoding, "
        f"forward passes, writing), `--num-workers 0 --batch-size {cfg['batch_size']}`; the marginal rate "
        f"is the images between the {r['n_small']}-image and the {cfg['n']}-image run over the time between them.",
        "",
        f"| run | wall s, {r['n_small']} images | wall s, {cfg['n']} images | images/s, whole command | "
        "marginal images/s | marginal vs one process, 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        lines.append(
            f"| {name} | {r['small'][name]:.1f} | {w[name]:.1f} | {cfg['n'] / w[name]:.1f} | "
            f"{m[name]:.1f} | {m[name] / m[one]:.2f} x |"
        )
    lines += [
        "",
        f"Goal: 2 processes at least 1.6 x one process: {'met' if speedup >= 1.6 else 'not met'} "
        f"({speedup:.2f} x marginal; {w[one] / w[two]:.2f} x on the whole command, start-up included). "
        f"Against one process given both cores as threads: {m[two] / m[both]:.2f} x marginal. "
        f"Outputs of each size the same bytes in all three runs: {r['same_bytes']}.",
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
    command = "python benchmarks/embed_ranks.py" + (
        " --dry-run" if args.dry_run else (f" --n {cfg['n']}" if args.n else "")
    )
    print(markdown(cfg, result, command))
    return 0 if result["same_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())
