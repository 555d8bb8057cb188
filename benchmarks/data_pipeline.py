"""Views per second per data worker, with and without the decoded cache.

One process, ``torch.set_num_threads(1)`` (what a DataLoader worker gets). For each data
set and view setting it times, over the same ``--n`` images:

* **decode**: ``load_image(path, size=cache_size)`` alone (the cost the cache removes);
* **no cache**: decode the original file every time, then make the views (what a
  dataset without the cache does every epoch);
* **cache**: ``MultiCropDataset[i]`` on a :class:`DecodedCache` memmap (read the
  ``uint8`` row, make the views); the one-off build time is printed separately.

Rates come from the process's CPU time (what a worker costs, steady on a shared
machine), with the wall-clock rates in brackets.

The views are :class:`MultiCropViews` with the paper's defaults (2 global views of
``image_size``, 12 local crops of ``local_size``). Ratio = cache / no cache. Data sets:
``../shared/data/jsrt/images`` (1024-px PNG) and ``../shared/data/organs/knee`` (224-px
PNG); missing ones are skipped. Example::

    python benchmarks/data_pipeline.py                 # 224/96 and 64/32, 48 images each
    python benchmarks/data_pipeline.py --n 100 --settings 224/96
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codafeat.data.cache.decoded import DecodedCache, cache_size_for
from codafeat.data.io import find_images, load_image
from codafeat.data.pretrain_dataset import MultiCropDataset
from codafeat.data.views import MultiCropViews

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATASETS = {"jsrt (1024-px PNG)": DATA / "jsrt" / "images", "knee (224-px PNG)": DATA / "organs" / "knee"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``fn(i)`` over ``i = 0..n-1`` (after one warm-up call).

    The CPU time of this (single-threaded) process is what a worker costs; on a machine
    shared with other jobs it is far steadier than the wall time.
    """
    fn(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def run(name: str, paths: list[str], image_size: int, local_size: int, n_local: int, workdir: str) -> dict:
    cs = cache_size_for(image_size)
    views = MultiCropViews(image_size=image_size, local_size=local_size, n_local_crops=n_local)
    n = len(paths)

    def decode(i: int) -> np.ndarray:
        return load_image(paths[i], size=cs)

    def no_cache(i: int):
        img = torch.from_numpy(load_image(paths[i], size=cs))
        return views(img, torch.Generator().manual_seed(i))

    t_decode = timed(decode, n)[1]
    w_nocache, t_nocache = timed(no_cache, n)
    t0 = time.perf_counter()
    cache = DecodedCache.build(paths, cs, cache_dir=workdir)
    t_build = time.perf_counter() - t0
    ds = MultiCropDataset(cache, np.zeros(len(cache), dtype=np.int64), views)
    w_cache, t_cache = timed(lambda i: ds[i], n)
    return {
        "data": name,
        "views": f"{image_size}/{local_size} x{n_local} (cache {cs})",
        "n": n,
        "decode_ms": 1e3 * t_decode,
        "nocache_ips": 1 / t_nocache,
        "cache_ips": 1 / t_cache,
        "ratio": t_nocache / t_cache,
        "wall_nocache_ips": 1 / w_nocache,
        "wall_cache_ips": 1 / w_cache,
        "build_s": t_build,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="images per measurement (default 48)")
    ap.add_argument("--settings", default="224/96,64/32", help="image_size/local_size pairs (default 224/96,64/32)")
    ap.add_argument("--n-local", type=int, default=12, help="local crops per image (default 12)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = [tuple(int(v) for v in s.split("/")) for s in args.settings.split(",")]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__}, 1 thread")
    rows = []
    for name, folder in DATASETS.items():
        if not folder.is_dir():
            print(f"skipped {name}: {folder} not found")
            continue
        paths = find_images(folder)[: args.n]
        for image_size, local_size in settings:
            with tempfile.TemporaryDirectory() as workdir:
                rows.append(run(name, paths, image_size, local_size, args.n_local, workdir))
            r = rows[-1]
            print(f"  {r['data']} {r['views']}: {r['nocache_ips']:.1f} -> {r['cache_ips']:.1f} images/s", flush=True)
    if not rows:
        print("no data found under", DATA.resolve())
        return
    print()
    print("images/s per worker from CPU time (wall-clock images/s in brackets)")
    print("| data | views | images | decode ms/img | no cache img/s | cache img/s | ratio | cache build s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['views']} | {r['n']} | {r['decode_ms']:.2f} | "
            f"{r['nocache_ips']:.1f} ({r['wall_nocache_ips']:.1f}) | {r['cache_ips']:.1f} ({r['wall_cache_ips']:.1f}) | "
            f"{r['ratio']:.2f} | {r['build_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
