"""Throughput of ``CodaEncoder.transform`` against a bare timm forward loop (issue 2, item 8).

For each folder of images, in one run and on one machine:

* **baseline**: the encoder's timm backbone (same weights, same memory layout)
  in a bare ``torch.inference_mode`` forward loop over the images *already decoded*
  into normalised ``(n, 3, S, S)`` float tensors (decoding is not timed);
* **encoder**: ``CodaEncoder.transform(paths)``, which reads, decodes, resizes and embeds
  every file, for each requested ``num_workers``.

Baseline and encoder runs alternate (``--repeats`` rounds) so that both see the same
machine load; the script prints images/s of each run and the median ratio
encoder / baseline per configuration. ``--rss N [N ...]`` then embeds N images (the file
list cycled) in a fresh subprocess per N and prints its peak resident memory, to show
that memory does not grow with the number of images beyond the output array.

Usage::

    python benchmarks/encode_throughput.py ../shared/data/organs/knee ../shared/data/jsrt/images \\
        --num-workers 0 auto --rss 500 5000

Run it on an otherwise idle machine for clean numbers; ``--threads`` sets
``torch.set_num_threads`` for both sides (default: the cores available).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from codafeat import CodaEncoder
from codafeat.data.io import find_images, load_image
from codafeat.data.loader import available_cpus


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_encoder(args: argparse.Namespace, num_workers: int | str) -> CodaEncoder:
    return CodaEncoder(
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=num_workers,
        device="cpu",
        normalize=False,
        random_state=0,
    ).fit()


def decoded_tensors(files: list[str], enc: CodaEncoder) -> torch.Tensor:
    """The images decoded, resized and normalised once, as the backbone's input (untimed)."""
    size = enc.image_size_
    x = torch.from_numpy(np.stack([load_image(f, size=size) for f in files]))[:, None]
    mean = torch.tensor(enc.config_["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(enc.config_["std"]).view(1, -1, 1, 1)
    x = (x.expand(-1, len(enc.config_["mean"]), -1, -1) - mean) / std
    return x.contiguous(memory_format=torch.channels_last if enc.model_.pre.channels_last else torch.contiguous_format)


def time_baseline(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    return time.perf_counter() - t0


def time_encoder(enc: CodaEncoder, files: list[str]) -> float:
    t0 = time.perf_counter()
    out = enc.transform(files)
    dt = time.perf_counter() - t0
    assert out.shape == (len(files), enc._n_features_out) and np.isfinite(out).all()
    return dt


class PrototypeDataset(torch.utils.data.Dataset):
    """The plain-DataLoader prototype the issue compares against: Pillow decode, ``convert("L")``,
    bilinear resize, float conversion and normalisation to 3 channels in the worker."""

    def __init__(self, files: list[str], size: int, mean: list[float], std: list[float]) -> None:
        self.files, self.size = files, size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            im = im.convert("L").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)[None].expand(len(self.mean), -1, -1)
        return (x - self.mean) / self.std


def time_prototype(model: torch.nn.Module, files: list[str], enc: CodaEncoder, batch_size: int, workers: int) -> float:
    ds = PrototypeDataset(files, enc.image_size_, enc.config_["mean"], enc.config_["std"])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers):
            model(x)
    return time.perf_counter() - t0


class _ProbeLog(logging.Handler):
    """Collects the encoder's 'probe: ... -> N worker(s)' decisions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.workers: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("probe:"):
            self.workers.append(int(msg.rsplit("->", 1)[1].split()[0]))


def bench_folder(folder: str, args: argparse.Namespace) -> dict:
    files = find_images(folder)
    if args.limit:
        files = files[: args.limit]
    n = len(files)
    encoders = {str(w): make_encoder(args, int(w) if w != "auto" else "auto") for w in args.num_workers}
    first = next(iter(encoders.values()))
    model = first.model_.backbone  # the bare timm model, same weights and layout as the encoder's
    x = decoded_tensors(files, first)
    contenders = {f"encoder num_workers={k}": (lambda enc=enc: time_encoder(enc, files)) for k, enc in encoders.items()}
    for w in args.prototype:
        contenders[f"prototype num_workers={w}"] = lambda w=w: time_prototype(model, files, first, args.batch_size, w)
    probe_log = _ProbeLog()
    logging.getLogger("codafeat._estimator.infer").addHandler(probe_log)
    logging.getLogger("codafeat._estimator.infer").setLevel(logging.DEBUG)
    # warm-up: one batch each (allocator, oneDNN primitive caches)
    time_baseline(model, x[: args.batch_size], args.batch_size)
    for enc in encoders.values():
        enc.transform(files[: args.batch_size])
    base_rates: list[float] = []
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    ratios: dict[str, list[float]] = {k: [] for k in contenders}
    base_threads = torch.get_num_threads()
    enc_threads = args.encoder_threads or base_threads
    for r in range(args.repeats):
        for key, run in contenders.items():
            torch.set_num_threads(base_threads)
            b = n / time_baseline(model, x, args.batch_size)
            torch.set_num_threads(enc_threads)
            e = n / run()
            torch.set_num_threads(base_threads)
            base_rates.append(b)
            rates[key].append(e)
            ratios[key].append(e / b)
            print(
                f"  round {r + 1}: baseline {b:6.1f} img/s | {key:28s} {e:6.1f} img/s | ratio {e / b:.3f}", flush=True
            )
    result = {
        "folder": folder,
        "n_images": n,
        "baseline_median": statistics.median(base_rates),
        "baseline_best": max(base_rates),
        "auto_workers": sorted(set(probe_log.workers)),
        "contenders": {},
    }
    for key in contenders:
        result["contenders"][key] = {
            "median": statistics.median(rates[key]),
            "best": max(rates[key]),
            "ratio_median": statistics.median(ratios[key]),
            "ratio_best": max(rates[key]) / max(base_rates),
            "ratios": [round(v, 3) for v in ratios[key]],
        }
    return result


def rss_child(n: int, folder: str, args: argparse.Namespace) -> None:
    """Embed ``n`` images (the folder's files cycled) and print memory figures as JSON."""
    files = list(itertools.islice(itertools.cycle(find_images(folder)), n))
    enc = make_encoder(args, args.num_workers[0] if args.num_workers[0] == "auto" else int(args.num_workers[0]))
    enc.transform(files[: args.batch_size])  # warm-up, so that the baseline RSS includes the model's buffers
    before = _vm("VmRSS")
    t0 = time.perf_counter()
    out = enc.transform(files)
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "n": n,
                "rss_before_transform_mb": before,
                "peak_rss_mb": _vm("VmHWM"),
                "peak_rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "output_mb": out.nbytes / 2**20,
                "img_s": n / dt,
            }
        )
    )


def _vm(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", default=["../shared/data/organs/knee", "../shared/data/jsrt/images"])
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", nargs="+", default=["auto"], help="encoder configurations to time (ints or 'auto')")
    p.add_argument(
        "--prototype",
        nargs="*",
        type=int,
        default=[],
        help="also time the plain-DataLoader prototype with these num_workers",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    p.add_argument(
        "--encoder-threads",
        type=int,
        default=None,
        help="torch threads for the encoder and prototype runs (default: --threads)",
    )
    p.add_argument("--repeats", type=int, default=2, help="alternating baseline/encoder rounds")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each folder")
    p.add_argument("--rss", type=int, nargs="*", default=[], help="peak-RSS runs: numbers of images")
    p.add_argument("--rss-folder", default=None, help="folder for the RSS runs (default: the first folder)")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or available_cpus())
    if args.rss_child is not None:
        rss_child(args.rss_child, args.folders[0], args)
        return 0
    print(
        f"machine: {available_cpus()} cores available ({os.cpu_count()} total), {cpu_model()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()}"
    )
    print(
        f"backbone {args.backbone}, image size {args.image_size}, batch size {args.batch_size}; torch threads: "
        f"baseline {torch.get_num_threads()}, encoder/prototype {args.encoder_threads or torch.get_num_threads()}"
    )
    results = []
    for folder in args.folders if args.repeats > 0 else []:
        print(f"\n{folder}", flush=True)
        res = bench_folder(folder, args)
        results.append(res)
        print(
            f"  => {res['n_images']} images; baseline {res['baseline_median']:.1f} img/s median, "
            f"{res['baseline_best']:.1f} best; num_workers='auto' chose {res['auto_workers']} worker(s)"
        )
        for key, e in res["contenders"].items():
            print(
                f"  => {key:28s} {e['median']:6.1f} img/s median, {e['best']:6.1f} best | ratio: median of "
                f"pairs {e['ratio_median']:.3f} {e['ratios']}, best/best {e['ratio_best']:.3f}"
            )
    if args.rss:
        folder = args.rss_folder or args.folders[0]
        print(f"output array: n x {make_encoder(args, 0)._n_features_out} float32")
        print(f"\npeak RSS, fresh process per run, {folder} cycled, num_workers={args.num_workers[0]}:")
        for n in args.rss:
            cmd = [sys.executable, os.path.abspath(__file__), folder, "--rss-child", str(n)]
            cmd += [
                "--backbone",
                args.backbone,
                "--image-size",
                str(args.image_size),
                "--batch-size",
                str(args.batch_size),
            ]
            cmd += ["--num-workers", args.num_workers[0]]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            r = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            )
            print(
                f"  {n:6d} images: RSS {r['rss_before_transform_mb']:.0f} MB before transform, peak {r['peak_rss_mb']:.0f} MB "
                f"(growth {r['peak_rss_mb'] - r['rss_before_transform_mb']:.0f} MB; output array {r['output_mb']:.1f} MB); "
                f"largest child process {r['peak_rss_workers_mb']:.0f} MB; {r['img_s']:.1f} img/s"
            )
    print(f"\nload average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
