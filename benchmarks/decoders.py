"""Faster PNG decoding (issue 13 item 4): Pillow against libspng (``pyspng``), in the same run.

    python benchmarks/decoders.py ../shared/data/jsrt/images ../shared/data/organs/knee

For every folder: the median milliseconds to decode one 8-bit greyscale PNG with each
decoder (whole files already in memory, so the disk is not timed), and whether both give
the same pixels. Then a robustness check, each case in a child process so that a crash
cannot hide: every decoder is given PNGs with one flipped byte (with and without a fixed-up
CRC). Each must either decode or raise a Python exception. A decoder that kills the
process (as torchvision's libpng op did, issue 14) is not fit for use, whatever its speed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L") if im.mode != "L" else im)


def _spng(data: bytes) -> np.ndarray:
    import pyspng

    return pyspng.load(data)


DECODERS = {"pillow": _pillow, "pyspng": _spng}


def _time(fn, blobs: list[bytes], repeats: int = 3) -> float:
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in blobs:
            fn(b)
        per.append((time.perf_counter() - t0) / len(blobs) * 1000)
    return statistics.median(per)


def corrupt_cases(data: bytes, n: int = 40, seed: int = 0) -> list[bytes]:
    """PNGs with one flipped byte after the signature; half of them with the chunk CRC fixed up."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        b = bytearray(data)
        pos = int(rng.integers(8, len(b)))
        b[pos] ^= 0xFF
        if k % 2:  # fix the CRC of the chunk that holds pos, so that only the content is wrong
            off = 8
            while off + 12 <= len(b):
                length = struct.unpack(">I", b[off : off + 4])[0]
                end = off + 12 + length
                if off <= pos < end and end <= len(b):
                    crc = zlib.crc32(bytes(b[off + 4 : off + 8 + length])) & 0xFFFFFFFF
                    b[off + 8 + length : end] = struct.pack(">I", crc)
                    break
                off = end
        out.append(bytes(b))
    return out


def child(name: str, path: str) -> None:
    """Decode every case of the file at ``path`` (a .npy of byte strings) with decoder ``name``."""
    cases = np.load(path, allow_pickle=False)
    raised = 0
    for blob in cases:
        try:
            DECODERS[name](bytes(blob))
        except Exception:  # noqa: BLE001 - any Python exception is the acceptable outcome
            raised += 1
    print(json.dumps({"decoder": name, "cases": len(cases), "raised": raised}))


def robustness(sample: bytes, tmp: Path) -> dict[str, str]:
    cases = corrupt_cases(sample)
    path = tmp / "cases.npy"
    width = max(len(c) for c in cases)
    np.save(path, np.array([c.ljust(width, b"\0") for c in cases], dtype=f"S{width}"), allow_pickle=False)
    verdict = {}
    for name in DECODERS:
        r = subprocess.run([sys.executable, __file__, "--child", name, str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            verdict[name] = f"process died (exit code {r.returncode})"
        else:
            rec = json.loads(r.stdout.strip().splitlines()[-1])
            verdict[name] = f"no crash; {rec['raised']} of {rec['cases']} raised, the rest decoded"
    return verdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*")
    ap.add_argument("--max-files", type=int, default=60)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    try:
        import pyspng  # noqa: F401
    except ImportError:
        print("pyspng is not installed (pip install pyspng): nothing to compare")
        return 1
    import tempfile

    print("| folder | files | Pillow ms/img | pyspng ms/img | speed-up | same pixels |")
    print("|---|---|---|---|---|---|")
    sample = None
    for folder in args.folders:
        files = sorted(Path(folder).rglob("*.png"))[: args.max_files]
        blobs = [f.read_bytes() for f in files]
        sample = sample or blobs[0]
        same = all(np.array_equal(_pillow(b), np.squeeze(_spng(b))) for b in blobs[:10])
        t = {name: _time(fn, blobs) for name, fn in DECODERS.items()}
        print(
            f"| {folder} | {len(blobs)} | {t['pillow']:.2f} | {t['pyspng']:.2f} | {t['pillow'] / t['pyspng']:.2f} | {same} |"
        )
    if sample is not None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, verdict in robustness(sample, Path(tmp)).items():
                print(f"\nrobustness, {name}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
