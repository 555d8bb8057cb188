"""From a folder to an archive (issue 13): how pretraining and embedding grow with the number of files.

    python benchmarks/scale.py --n 10000 100000        # synthetic files on this disk, removed afterwards
    python benchmarks/scale.py --dry-run                # 200 files, seconds (tested in CI)

For each N it writes N small synthetic radiographs into a temporary folder: PNG, and DICOM
when pydicom is installed (``--dicom-fraction``), in nested organ folders
(``<organ>/<batch>/<file>``). It then measures, each run in a fresh process so that peak
memory is its own:

* ``CodaPretrainer.fit`` up to its first training step, three times: a first run with an
  empty cache folder, a second run with nothing changed, and a third run after adding 1 %
  new files. For each run: the time to scan and label the folder, the time until training
  could start on the decoded cache (the missing shards fill in the background), the time
  to the first step, when the cache was complete, and the peak RSS. The first run also
  gives the decode rate per worker and the disk the cache uses.
* ``CodaEncoder.transform`` over all N files: images/s and peak RSS.

The last table fits each figure's growth with N as a power law (log-log slope): 1.0 is
linear, below 1 is better. The figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ORGANS = ("chest", "hand", "knee", "spine", "pelvis", "skull")
PER_FOLDER = 500


def write_files(
    root: Path, n: int, *, start: int = 0, side: int = 64, dicom_fraction: float = 0.2, seed: int = 0
) -> int:
    """``n`` synthetic radiographs in ``root/<organ>/<batch>/``; returns how many are DICOM."""
    from PIL import Image

    try:
        import pydicom  # noqa: F401
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        dicom_fraction = 0.0
    rng = np.random.default_rng(seed + start)
    yy, xx = np.mgrid[:side, :side]
    n_dicom = 0
    for k in range(start, start + n):
        organ = ORGANS[k % len(ORGANS)]
        folder = root / organ / f"b{k // (PER_FOLDER * len(ORGANS)):05d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = 60 + 40 * np.sin(xx / (3 + k % len(ORGANS))) + 30 * np.cos(yy / 5)
        img = np.clip(base + rng.normal(0, 10, base.shape), 0, 255)
        if rng.random() < dicom_fraction:
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            path = folder / f"{k:08d}.dcm"
            ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.Rows = ds.Columns = side
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.Manufacturer, ds.BodyPartExamined = "SYNTH", organ.upper()
            ds.PixelData = (img * 16).astype(np.uint16).tobytes()
            ds.save_as(str(path), enforce_file_format=True)
            n_dicom += 1
        else:
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{k:08d}.png")
    return n_dicom


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# --------------------------------------------------------------------------- child processes
class _FirstStep(Exception):
    pass


def child_fit(root: str, cache: str, workers: int, dry: bool) -> dict:
    import codafeat._train.run as run_mod
    import codafeat.data.cache.decoded as dc
    import codafeat.data.organs as organs_mod
    from codafeat import CodaPretrainer
    from codafeat._train.loop import CodaTrainer

    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    real_collect, real_build = organs_mod.collect_organ_images, dc.DecodedCache.build.__func__

    def collect(*a, **k):
        out = real_collect(*a, **k)
        marks["scan_s"] = time.perf_counter() - t0
        return out

    def build(cls, *a, **k):
        t = time.perf_counter()
        out = real_build(cls, *a, **k)
        marks["cache_s"] = time.perf_counter() - t
        marks["n_images"] = len(out)  # the readable images (fit stops at the first step: no n_images_)
        return out

    def first_step(self, *a, **k):
        marks["first_step_s"] = time.perf_counter() - t0
        raise _FirstStep

    run_mod.collect_organ_images = collect
    dc.DecodedCache.build = classmethod(build)
    CodaTrainer.step = first_step
    pre = CodaPretrainer(
        backbone="test_convnext",
        image_size=32,
        local_size=32,
        n_local_crops=2,
        head_out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        batch_size=8,
        epochs=1,
        monitor_every=0,
        cache_dir=cache,
        num_workers=workers,
        device="cpu",
        random_state=0,
    )
    try:
        pre.fit(root)
    except _FirstStep:
        pass
    # the shards still being filled in the background (fit returns early here): wait, so that
    # the next run finds a complete cache, and report when it was complete
    while list(Path(cache).glob(".fill-*.json")):
        time.sleep(0.1)
    marks["cache_complete_s"] = time.perf_counter() - t0
    return marks


def child_transform(root: str, workers: int) -> dict:
    from codafeat import CodaEncoder
    from codafeat.data.io import find_images

    t0 = time.perf_counter()
    paths = find_images(root)
    t_scan = time.perf_counter() - t0
    enc = CodaEncoder(
        backbone="test_convnext", image_size=32, batch_size=256, num_workers=workers, device="cpu", random_state=0
    ).fit()
    t1 = time.perf_counter()
    out = enc.transform(paths)
    dt = time.perf_counter() - t1
    return {"scan_s": t_scan, "transform_s": dt, "images_per_s": len(paths) / dt, "n_images": int(out.shape[0])}


def run_child(kind: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *args]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one size
def measure(n: int, args: argparse.Namespace, work: Path) -> dict:
    root, cache = work / f"data{n}", work / f"cache{n}"
    t = time.perf_counter()
    n_dicom = write_files(root, n, side=args.side, dicom_fraction=args.dicom_fraction)
    gen_s = time.perf_counter() - t
    w = str(args.workers)
    first = run_child("fit", str(root), str(cache), w)
    disk = _du(cache)
    second = run_child("fit", str(root), str(cache), w)
    add = max(1, n // 100)
    write_files(root, add, start=n, side=args.side, dicom_fraction=args.dicom_fraction, seed=1)
    third = run_child("fit", str(root), str(cache), w)
    enc = run_child("transform", str(root), w)
    res = {
        "n": n,
        "n_dicom": n_dicom,
        "generate_s": gen_s,
        "data_mb": _du(root) / 1e6,
        "cache_mb": disk / 1e6,
        "first": first,
        "second": second,
        "incremental": third,
        "added": add,
        "encoder": enc,
        "decode_per_worker": n / first["cache_complete_s"] / max(1, args.workers),
    }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return res


def slope(ns: list[int], values: list[float]) -> float:
    x, y = np.log(ns), np.log(np.maximum(values, 1e-9))
    return float(np.polyfit(x, y, 1)[0]) if len(ns) > 1 else float("nan")


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| N (DICOM) | scan s | first step s | cache complete s | peak RSS MB | 2nd run: first step s (% of 1st "
        "cache) | +1 %: first step s, cache complete s | decode img/s/worker | cache MB | encoder img/s, RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f, s, i, e = r["first"], r["second"], r["incremental"], r["encoder"]
        lines.append(
            f"| {r['n']} ({r['n_dicom']}) | {f['scan_s']:.2f} | {f['first_step_s']:.1f} | {f['cache_complete_s']:.1f} | "
            f"{f['rss_mb']:.0f} | {s['first_step_s']:.2f} ({100 * s['first_step_s'] / f['cache_complete_s']:.1f} %) | "
            f"{i['first_step_s']:.2f}, {i['cache_complete_s']:.1f} | "
            f"{r['decode_per_worker']:.0f} | {r['cache_mb']:.1f} | {e['images_per_s']:.0f}, {e['rss_mb']:.0f} |"
        )
    ns = [r["n"] for r in results]
    if len(ns) > 1:
        lines += ["", "Growth with N (log-log slope; 1 = linear):", ""]
        for name, get in (
            ("scan", lambda r: r["first"]["scan_s"]),
            ("first run to first step", lambda r: r["first"]["first_step_s"]),
            ("second run to first step", lambda r: r["second"]["first_step_s"]),
            ("peak RSS of the first run", lambda r: r["first"]["rss_mb"]),
            ("encoder time", lambda r: r["encoder"]["transform_s"]),
            ("encoder peak RSS", lambda r: r["encoder"]["rss_mb"]),
        ):
            lines.append(f"- {name}: {slope(ns, [get(r) for r in results]):.2f}")
    lines += [
        "",
        f"Command: `python benchmarks/scale.py --n {' '.join(map(str, ns))} --workers {args.workers}` "
        f"({args.side}-px files, DICOM fraction {args.dicom_fraction}, test_convnext at 32 px).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dry-run", action="store_true", help="200 and 400 files, seconds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--dicom-fraction", type=float, default=0.2)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.child:
        out = (
            child_fit(rest[0], rest[1], int(rest[2]), False)
            if args.child == "fit"
            else child_transform(rest[0], int(rest[1]))
        )
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return 0
    ns = [200, 400] if args.dry_run else args.n
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="codafeat-scale-"))
    results = []
    try:
        for n in ns:
            t = time.perf_counter()
            results.append(measure(n, args, work))
            print(f"N={n}: {time.perf_counter() - t:.0f} s: {json.dumps(results[-1])}", flush=True)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
