"""``codafeat embed PATHS|DIR --weights W --out features.npy|.csv|.parquet``: embed images.

Rows follow the inputs in the order given, each folder expanded to its images found
recursively in sorted order. Output formats:

* ``.npy``: a float32 array (n_images, n_features), plus ``<name>.paths.txt`` listing the
  image of each row;
* ``.csv``: a ``path`` column, then ``f0 ... f<n-1>``;
* ``.parquet``: the same columns, the features as float32 (needs ``pyarrow``:
  ``pip install 'codafeat[parquet]'``).

With ``--on-error skip`` unreadable images get NaN rows (and a warning naming them).

Under ``torchrun`` the images are shared out over the processes (and nodes): see
:mod:`codafeat._cli.embed_ranks`.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME = "embed"
HELP = "embed images with Coda weights and write the features (.npy, .csv or .parquet)"
DESCRIPTION = __doc__

FORMATS = (".npy", ".csv", ".parquet")

logger = logging.getLogger(__name__)


def add_encoder_arguments(parser: argparse.ArgumentParser, *, weights_required: bool = True) -> None:
    """The CodaEncoder options shared by ``embed`` and ``probe``."""
    parser.add_argument(
        "--weights", required=weights_required, help="codafeat weights file (.safetensors) or installed weights name"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="timm model name: needed for a plain timm checkpoint, a check for other weights "
        "(default: from the weights)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: from the weights)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--num-workers",
        type=_workers,
        default="auto",
        help="image-decoding worker processes, or auto (default: chosen from the input and the cores)",
    )
    parser.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="embedding cache folder: images already embedded with these weights are not embedded again",
    )
    parser.add_argument(
        "--on-error", choices=("raise", "skip"), default="raise", help="unreadable images: stop (default) or skip"
    )
    parser.add_argument("--verbose", type=int, default=1, help="progress bar (1, default) or quiet (0)")


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto', got {value!r}")
    return n


def make_encoder(args: argparse.Namespace, **overrides):
    """A fitted CodaEncoder from the shared options; ``overrides`` replace parameters."""
    from ..encoder import CodaEncoder

    params = dict(
        weights=args.weights,
        backbone=getattr(args, "backbone", None),
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.num_workers,
        on_error=args.on_error,
        cache=args.cache,
        verbose=args.verbose,
    )
    params.update(overrides)
    return CodaEncoder(**params).fit()


def collect_images(inputs: Sequence[str]) -> list[str]:
    """Image paths from files and folders, in the order given (folders sorted, recursive)."""
    from ..data.io import find_images

    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = find_images(p)
            if not found:
                raise ValueError(f"no images found in folder {item!r}")
            paths.extend(found)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="PATH", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help="output file: .npy, .csv or .parquet")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out that is not an embeddings file"
    )
    add_encoder_arguments(parser)


def _check_out(out: str) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {out!r}: unsupported format {suffix or '(none)'}; use one of {', '.join(FORMATS)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"writing {out!r} (.parquet) needs pyarrow: pip install 'codafeat[parquet]' (or write .npy or .csv)"
            ) from exc
    return suffix


def _path_bytes(path: str) -> bytes:
    """A path as the bytes the file system uses (lossless for names that are not UTF-8)."""
    return os.fsencode(path)


def write_features(out: str | os.PathLike, paths: Sequence[str], emb: np.ndarray) -> list[Path]:
    """Write embeddings in the format of ``out``'s suffix; returns the files written.

    File names are bytes on POSIX: the path list (``.paths.txt``) and the ``.csv`` keep
    them byte for byte (names that are not UTF-8 are written as their raw bytes, through
    ``os.fsencode``), so every row can be matched to its file. The files of one output
    (``.npy`` and its ``.paths.txt``) are written as a set: either both are replaced or
    neither.
    """
    from .._fileio import atomic_write_many

    out = Path(out)
    suffix = _check_out(str(out))
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, np.asarray(emb, dtype=np.float32), allow_pickle=False)
        _check_names_fit_a_path_list(paths)
        sidecar = _sidecar(out)
        names = b"".join(_path_bytes(p) + b"\n" for p in paths)
        return atomic_write_many({out: buf.getvalue(), sidecar: names})
    cols = [f"f{i}" for i in range(emb.shape[1])]
    if suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", *cols])
        for p, row in zip(paths, emb):
            writer.writerow([p, *(f"{x:.9g}" for x in row)])  # 9 digits: float32 round-trips
        # surrogateescape turns the undecodable bytes of a file name back into those bytes
        return atomic_write_many({out: text.getvalue().encode("utf-8", "surrogateescape")})
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        for p in paths:
            p.encode("utf-8")
        path_column = pa.array(list(paths), type=pa.string())
    except UnicodeEncodeError:
        logger.warning("%s: some file names are not UTF-8; the path column holds their raw bytes", out)
        path_column = pa.array([_path_bytes(p) for p in paths], type=pa.binary())
    emb32 = np.asarray(emb, dtype=np.float32)
    table = pa.table([path_column, *(pa.array(emb32[:, j]) for j in range(emb32.shape[1]))], names=["path", *cols])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_write_many({out: buf.getvalue()})


def _sidecar(out: Path) -> Path:
    """``X.paths.txt`` beside ``X.npy``: the image of each row, one per line."""
    return out.with_name(out.stem + ".paths.txt")


def _check_names_fit_a_path_list(paths: Sequence[str]) -> None:
    """A name with a line break would shift every later row of ``.paths.txt``: refuse it, naming it."""
    bad = [p for p in paths if "\n" in p or "\r" in p]
    if bad:
        raise ValueError(
            f"{len(bad)} image name(s) contain a line break, e.g. {bad[0]!r}: the .npy output's .paths.txt lists one "
            "name per line and would pair rows with the wrong files. Rename them, or write .csv or .parquet, "
            "which quote such names"
        )


def _refuse_existing(what: str, path: Path) -> str | None:
    """``None`` when the existing file may be replaced by an embeddings output, else what it should be."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    suffix = path.suffix.lower()
    if suffix == ".npy" and head.startswith(b"\x93NUMPY"):
        return None
    if suffix == ".parquet" and head.startswith(b"PAR1"):
        return None
    if suffix == ".csv" and head.startswith(b"path,"):
        return None
    if path.name.endswith(".paths.txt"):
        if _is_path_list_of(path, path.with_name(path.name[: -len(".paths.txt")] + ".npy")):
            return None  # the path list of an earlier .npy output (plain text by design)
        return "the path list of an embeddings .npy beside it (one line per row of that .npy)"
    return f"an embeddings file ({suffix or 'no suffix'})"


def _is_path_list_of(paths_txt: Path, npy: Path) -> bool:
    """Whether ``paths_txt`` lists one name per row of the embeddings file ``npy`` (written together)."""
    import numpy as np

    try:
        rows = np.load(npy, mmap_mode="r", allow_pickle=False).shape[0]
        with open(paths_txt, "rb") as fh:
            lines = sum(1 for _ in fh)
    except (OSError, ValueError, IndexError):
        return False
    return rows == lines


def _check_outputs(args: argparse.Namespace) -> str:
    """The output's format, after the checks that must pass before the (long) embedding."""
    from .._fileio import check_outputs, check_writable

    suffix = _check_out(args.out)
    outputs = {"--out": args.out}
    if suffix == ".npy":
        outputs["--out's path list"] = str(_sidecar(Path(args.out)))
    check_outputs(outputs, inputs=args.inputs, refuse_existing=_refuse_existing, overwrite=args.overwrite)
    check_writable(args.out, what="--out")
    return suffix


def _collect(args: argparse.Namespace, suffix: str) -> list[str]:
    paths = collect_images(args.inputs)
    if suffix == ".npy":
        _check_names_fit_a_path_list(paths)
    return paths


def _report(written: Sequence[Path], shape: tuple[int, ...], n_skipped: int, where: str = "") -> None:
    logger.info(
        "wrote %d x %d embeddings to %s%s",
        shape[0],
        shape[1],
        ", ".join(map(str, written)),
        f" ({n_skipped} unreadable image(s) as NaN rows{where})" if n_skipped else "",
    )


def run(args: argparse.Namespace) -> int:
    from .._train.dist import launched_by_torchrun

    if launched_by_torchrun():
        from .embed_ranks import run_ranks

        return run_ranks(
            args,
            list_images=lambda: _collect(args, _check_outputs(args)),
            make_encoder=lambda **kw: make_encoder(args, **kw),
            write=lambda paths, rows: write_features(args.out, paths, rows),
            report=_report,
        )
    paths = _collect(args, _check_outputs(args))  # the checks fail before the (long) embedding
    result = make_encoder(args).embed(paths)
    written = write_features(args.out, paths, result.embeddings)
    _report(written, result.embeddings.shape, len(result.skipped))
    return 0
