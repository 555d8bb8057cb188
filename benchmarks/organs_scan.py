"""``codafeat organs`` on an archive of DICOM headers (issue 21): first run against second run.

    python benchmarks/organs_scan.py --n 100000      # synthetic files on this disk, removed afterwards
    python benchmarks/organs_scan.py --dry-run       # 300 files, seconds (tested in CI)

It writes N small DICOM files (a 2x2 image; every header carries a messy BodyPartExamined
drawn from the spellings archives hold, some empty with a StudyDescription to fall back
on) in folders of 1,000, then measures, each in a fresh process:

* **bare header reads**: ``pydicom.dcmread(stop_before_pixels=True, specific_tags=...)``
  of the four tags codafeat reads, over every file: the floor of a first run;
* **first run**: ``codafeat organs DIR --organ-from dicom --cache-dir C --summary``
  with an empty cache folder (process start, scan, header reads, mapping, index write);
* **second run**: the same command again, nothing changed (the tag index answers).

Goals: the first run is bounded by the header reads (first / bare near 1), and the second
run takes under 5 % of the first. The figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (BodyPartExamined, StudyDescription) pairs the synthetic archive cycles through.
TAGS = [
    ("CHEST", ""),
    ("PORT CHEST", ""),
    ("THORAX", ""),
    ("CHEST_LAT", ""),
    ("TORAX", ""),
    ("LSPINE", ""),
    ("L SPINE", ""),
    ("LUMBAR SPINE", ""),
    ("C-SPINE", ""),
    ("HAND LT", ""),
    ("EXTREMITY", "XR HAND 2V"),
    ("", "KNEE BILAT STANDING"),
    ("KNIE RECHTS", ""),
    ("PELVIS", ""),
    ("SKULL", ""),
    ("UNKNOWN PART", ""),
]
PER_FOLDER = 1000


def templates() -> list[bytes]:
    """One small DICOM file per TAGS entry, as bytes (writing copies is much faster than pydicom)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the messy values are not valid CS values
        return [_template(part, study) for part, study in TAGS]


def _template(part: str, study: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer = "CR", "Synthetic"
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BodyPartExamined, ds.StudyDescription = part, study
    ds.PixelData = bytes(4)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_archive(root: Path, n: int) -> None:
    blobs = templates()
    for k in range(n):
        folder = root / f"f{k // PER_FOLDER:04d}"
        if k % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{k:07d}.dcm").write_bytes(blobs[k % len(blobs)])


BARE = """
import sys, pydicom
from codafeat.data.io import find_images
from codafeat.data.organs import ORGAN_TAGS
for p in find_images(sys.argv[1]):
    pydicom.dcmread(p, stop_before_pixels=True, specific_tags=list(ORGAN_TAGS))
"""


def _timed(cmd: list[str]) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {r.stderr[-2000:]}")
    return wall, r.stdout


def measure(n: int, workdir: Path) -> dict:
    archive, cache = workdir / "archive", workdir / "cache"
    t0 = time.perf_counter()
    write_archive(archive, n)
    write_s = time.perf_counter() - t0
    organs = [
        sys.executable,
        "-m",
        "codafeat",
        "-q",
        "organs",
        str(archive),
        "--organ-from",
        "dicom",
        "--cache-dir",
        str(cache),
        "--summary",
    ]
    bare_s, _ = _timed([sys.executable, "-c", BARE, str(archive)])
    first_s, first_out = _timed(organs)
    second_s, second_out = _timed(organs)
    if first_out != second_out:
        raise RuntimeError("the second run's table differs from the first's")
    return {
        "n": n,
        "write_s": write_s,
        "bare_s": bare_s,
        "first_s": first_s,
        "second_s": second_s,
        "first_over_bare": first_s / bare_s,
        "second_over_first": second_s / first_s,
        "table": first_out,
    }


def markdown(r: dict, command: str) -> str:
    ok_first = "met" if r["first_over_bare"] <= 1.5 else "not met"
    ok_second = "met" if r["second_over_first"] < 0.05 else "not met"
    return "\n".join(
        [
            f"### `codafeat organs` on {r['n']:,} synthetic DICOM headers",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
            f"Command: `{command}`. Each figure is one fresh process (start-up included).",
            "",
            "| run | wall s | ratio |",
            "|---|---|---|",
            f"| bare header reads (pydicom, 4 tags, every file) | {r['bare_s']:.1f} | 1 |",
            f"| first run, empty tag index | {r['first_s']:.1f} | {r['first_over_bare']:.2f} x bare |",
            f"| second run, nothing changed | {r['second_s']:.2f} | {100 * r['second_over_first']:.1f} % of the first |",
            "",
            f"Goals: first run bounded by the header reads ({ok_first}: {r['first_over_bare']:.2f} x the bare reads); "
            f"second run under 5 % of the first ({ok_second}: {100 * r['second_over_first']:.1f} %).",
            "",
            "The table the command printed (both runs the same):",
            "",
            "```",
            r["table"].rstrip(),
            "```",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="DICOM files (default: 100000)")
    ap.add_argument("--dry-run", action="store_true", help="300 files (for CI)")
    ap.add_argument("--workdir", default=None, help="where to write the files (default: a temporary folder)")
    args = ap.parse_args(argv)
    n = 300 if args.dry_run else args.n
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="codafeat-organs-"))
    try:
        result = measure(n, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = "python benchmarks/organs_scan.py " + ("--dry-run" if args.dry_run else f"--n {n}")
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
