"""Training sets as files: an organ-per-sub-folder tree, or a manifest (CSV or Parquet).

:func:`write_image_folder` writes images as such a tree, with a ``labels.csv``.

:func:`scan_organ_folder` reads ``folder/<organ>/.../<image>`` to ``(paths, organ
labels)``; :func:`read_manifest` reads a manifest of ``path,organ`` (or other columns) to
the same, from a ``.csv`` file or a ``.parquet`` file (Parquet needs ``pyarrow``:
``pip install 'codafeat[parquet]'``). :func:`is_manifest` says whether a path names one.
:func:`codafeat.data.organs.collect_organ_images` chooses between them.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .io import IMAGE_SUFFIXES, find_images

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_SUFFIXES",
    "is_manifest",
    "manifest_columns",
    "read_manifest",
    "read_manifest_paths",
    "scan_organ_folder",
    "write_image_folder",
]

#: File suffixes read as manifests (case-insensitive).
MANIFEST_SUFFIXES = (".csv", ".parquet")


def is_manifest(path: object) -> bool:
    """Whether ``path`` is a manifest file (an existing ``.csv`` or ``.parquet`` file).

    Examples
    --------
    >>> is_manifest("no/such/labels.csv"), is_manifest(["a.png"])
    (False, False)
    """
    return (
        isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(path)
    )


def scan_organ_folder(folder: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Images of an organ-per-sub-folder tree and their organ labels.

    The organ of an image is the name of the first-level sub-folder that holds it; images
    are found recursively below it (:func:`codafeat.data.io.find_images`, hidden entries
    skipped, files without an image suffix ignored and counted in the log).

    Parameters
    ----------
    folder : str or path
        ``folder/<organ>/.../<image>``.

    Returns
    -------
    paths : list of str
        Sorted image paths.
    labels : ndarray of str
        The organ of each image.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    ValueError
        If there are images directly in ``folder`` (no organ), or no images at all.
    """
    root = Path(folder)
    paths = find_images(root)  # raises FileNotFoundError for a missing folder
    top, prefix = str(root), os.path.join(str(root), "")
    loose = [p for p in paths if os.path.dirname(p) == top]  # string operations: fast at a million files
    if loose:
        raise ValueError(
            f"{len(loose)} image(s) lie directly in {str(root)!r} (e.g. {Path(loose[0]).name!r}); the organ "
            "label is the first-level sub-folder: move them into <folder>/<organ>/"
        )
    if not paths:
        raise ValueError(
            f"no images found under {str(root)!r} (expected <folder>/<organ>/<image> with suffixes "
            f"{sorted(IMAGE_SUFFIXES)})"
        )
    labels = np.array([p[len(prefix) :].split(os.sep, 1)[0] for p in paths])
    counts = Counter(labels.tolist())
    empty = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in counts)
    if empty:
        logger.warning("%s: sub-folder(s) without images, ignored: %s", root, empty)
    logger.info("%s: %d image(s) of %d organ(s): %s", root, len(paths), len(counts), dict(sorted(counts.items())))
    return paths, labels


def _check_columns(src: Path, header: list[str], path_column: str, label_column: str | None) -> None:
    missing = [c for c in (path_column, label_column) if c and c not in header]
    if missing:
        raise ValueError(f"manifest {str(src)!r} lacks column(s) {missing}; its columns are {header}")


def _read_rows(src: Path, path_column: str, label_column: str | None) -> list[tuple[int, str, str]]:
    """``(line, path, label)`` of every row, stripped; the header checked (CSV: line numbers; Parquet: rows from 1).

    ``label_column=None`` reads the paths only (every label ``""``).
    """
    if src.suffix.lower() == ".parquet":
        return _read_parquet_rows(src, path_column, label_column)
    with open(src, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise ValueError(
                f"manifest {str(src)!r} is empty (expected a header row with {path_column!r}, {label_column!r})"
            )
        header = [h.strip() for h in header]
        reader.fieldnames = header
        _check_columns(src, header, path_column, label_column)
        return [
            (line, (row.get(path_column) or "").strip(), (row.get(label_column) or "").strip() if label_column else "")
            for line, row in enumerate(reader, start=2)
        ]


def _read_parquet_rows(src: Path, path_column: str, label_column: str) -> list[tuple[int, str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            f"reading the Parquet manifest {str(src)!r} needs pyarrow: pip install 'codafeat[parquet]' "
            "(or save the manifest as .csv)"
        ) from exc
    try:
        pfile = pq.ParquetFile(src)
        header = list(pfile.schema_arrow.names)
        table = pfile.read(columns=[c for c in (path_column, label_column) if c and c in header])
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError types for damaged files
        raise ValueError(
            f"manifest {str(src)!r} is not a readable Parquet file ({type(exc).__name__}: {exc})"
        ) from None
    _check_columns(src, header, path_column, label_column)

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):  # null or NaN: an empty cell
            return ""
        if isinstance(value, bytes):  # a binary path column: the file system's own bytes
            return os.fsdecode(value).strip()
        return str(value).strip()

    paths = table.column(path_column).to_pylist()
    labels = table.column(label_column).to_pylist() if label_column else [""] * len(paths)
    return [(row, cell(p), cell(lab)) for row, (p, lab) in enumerate(zip(paths, labels), start=1)]


def _unique_rows(
    rows: list[tuple[int, str, str]], src: Path, unit: str, label_column: str | None
) -> tuple[list[str], list[str], list[int], list[int]]:
    """``(paths, labels, rows with an empty cell, repeated rows)``; one file under two labels raises.

    With ``label_column=None`` (paths only) only an empty path is an empty cell.
    """
    paths: list[str] = []
    labels: list[str] = []
    bad: list[int] = []
    first: dict[str, tuple[int, str]] = {}
    duplicates: list[int] = []
    for line, p, lab in rows:
        if not p or (label_column and not lab):
            bad.append(line)
            continue
        full = str(Path(p) if Path(p).is_absolute() else src.parent / p)
        key = os.path.normpath(full)
        if key in first:
            line0, lab0 = first[key]
            if lab0 != lab:
                raise ValueError(
                    f"manifest {str(src)!r}: {p!r} is listed twice with different labels: {lab0!r} on {unit} {line0} "
                    f"and {lab!r} on {unit} {line}; one image has one {label_column}"
                )
            duplicates.append(line)
            continue
        first[key] = (line, lab)
        paths.append(full)
        labels.append(lab)
    return paths, labels, bad, duplicates


def read_manifest(
    csv_path: str | os.PathLike,
    *,
    path_column: str = "path",
    label_column: str = "organ",
    check_files: bool = True,
) -> tuple[list[str], np.ndarray]:
    """Image paths and labels from a manifest: a CSV or Parquet file (e.g. ``path,organ``).

    Parameters
    ----------
    csv_path : str or path
        The manifest: a ``.csv`` file with a header row, or a ``.parquet`` file (needs
        ``pyarrow``). Other columns are ignored. Errors name CSV rows by their line in the
        file and Parquet rows by their number (from 1).
    path_column : str, default="path"
        Column of image paths; relative paths are relative to the manifest's folder.
    label_column : str, default="organ"
        Column of labels (e.g. ``"kl_grade"``).
    check_files : bool, default=True
        Check that every image file exists.

    A file listed twice with the same label is used once (with a warning); listed twice
    with different labels, it is an error naming both lines.

    Returns
    -------
    paths : list of str
        Image paths, in file order.
    labels : ndarray of str
        Labels.

    Raises
    ------
    FileNotFoundError
        If the CSV or (with ``check_files``) listed images are missing.
    ValueError
        If the manifest is empty, not UTF-8 (CSV), not readable (Parquet), lacks a column,
        has rows with an empty path or label,
        or lists one file under two labels.
    """
    paths, labels = _read_manifest(Path(csv_path), path_column, label_column, check_files)
    return paths, np.array(labels)


def manifest_columns(csv_path: str | os.PathLike) -> list[str]:
    """The column names of a manifest (its CSV header or Parquet schema), without reading its rows.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = f.write_text("path, organ\\na.png,chest\\n")
    >>> manifest_columns(f)
    ['path', 'organ']
    """
    src = Path(csv_path)
    if src.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError(
                f"reading the Parquet manifest {str(src)!r} needs pyarrow: pip install 'codafeat[parquet]'"
            ) from exc
        try:
            return list(pq.ParquetFile(src).schema_arrow.names)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError types for damaged files
            raise ValueError(
                f"manifest {str(src)!r} is not a readable Parquet file ({type(exc).__name__}: {exc})"
            ) from None
    with open(src, newline="", encoding="utf-8-sig") as fh:
        return [h.strip() for h in (next(csv.reader(fh), None) or [])]


def read_manifest_paths(
    csv_path: str | os.PathLike, *, path_column: str = "path", label_column: str = "organ", check_files: bool = True
) -> tuple[list[str], np.ndarray | None]:
    """The image paths of a manifest, and its labels when it has ``label_column`` (else ``None``).

    For inputs whose labels come from elsewhere (DICOM headers): only ``path_column`` is
    required. Errors are those of :func:`read_manifest`.
    """
    src = Path(csv_path)
    if src.is_file() and label_column in manifest_columns(src):
        return read_manifest(src, path_column=path_column, label_column=label_column, check_files=check_files)
    return _read_manifest(src, path_column, None, check_files)[0], None


def _read_manifest(
    src: Path, path_column: str, label_column: str | None, check_files: bool
) -> tuple[list[str], list[str]]:
    """:func:`read_manifest`'s work, labels as a list (``label_column=None``: paths only, labels empty)."""
    if src.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(
            f"manifest {str(src)!r}: unsupported format; a manifest is one of {', '.join(MANIFEST_SUFFIXES)}"
        )
    if not src.is_file():
        raise FileNotFoundError(f"manifest {str(src)!r} does not exist or is not a file")
    try:
        rows = _read_rows(src, path_column, label_column)
    except UnicodeDecodeError as exc:
        raise ValueError(f"manifest {str(src)!r} is not UTF-8 text ({exc}); save it as UTF-8") from None
    unit = "row" if src.suffix.lower() == ".parquet" else "line"
    paths, labels, bad, duplicates = _unique_rows(rows, src, unit, label_column)
    if duplicates:
        same = f" with the same {label_column}" if label_column else ""
        warnings.warn(
            f"manifest {str(src)!r}: {len(duplicates)} row(s) repeat an image already listed{same} "
            f"({unit}s {duplicates[:10]}); each image is used once",
            UserWarning,
            stacklevel=3,
        )
    if bad:
        cells = f"{path_column!r} or {label_column!r}" if label_column else repr(path_column)
        raise ValueError(f"manifest {str(src)!r}: {len(bad)} row(s) with an empty {cells} ({unit}s {bad[:10]})")
    if not paths:
        raise ValueError(f"manifest {str(src)!r} has a header but no rows")
    if check_files:
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"manifest {str(src)!r}: {len(absent)} listed image(s) do not exist, e.g. {absent[:5]}"
            )
    return paths, labels


# --------------------------------------------------------------------------- writing a tree
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


def _check_folder_name(label: str) -> str:
    if not _SAFE_NAME.match(label) or label in (".", ".."):
        raise ValueError(
            f"label {label!r} cannot be a folder name: use letters, digits, spaces, '_', '.', '+', '-' "
            "and start with a letter or digit"
        )
    return label


def write_image_folder(
    images: Any,
    labels: Sequence[Any],
    folder: str | os.PathLike,
    *,
    variants: Sequence[Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write images as PNG files in one sub-folder per label, plus a ``labels.csv``.

    File ``<folder>/<label>/<label>_<index:05d>.png`` holds ``images[index]``;
    ``<folder>/labels.csv`` lists ``path,organ`` (and ``variant`` when given) in input
    order, with paths relative to ``folder`` (readable by :func:`read_manifest`). The tree
    is readable by :func:`scan_organ_folder` and :class:`~codafeat.CodaPretrainer`.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or sequence of 2-d arrays
        ``uint8`` or ``uint16`` (16-bit PNG) greyscale images.
    labels : sequence of length n
        Folder name of each image (e.g. the organ).
    folder : str or path
        Output folder (created).
    variants : sequence of length n, optional
        A second label written as the ``variant`` column of ``labels.csv``.
    overwrite : bool, default=False
        Allow a non-empty ``folder``: files this function would write, and earlier files of
        the same ``<label>_<digits>.png`` pattern in the label folders, are replaced; other
        files are left alone.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    FileExistsError
        If ``folder`` is not empty and ``overwrite`` is False.
    ValueError
        For mismatched lengths, bad image shapes/dtypes or labels unfit as folder names.
    """
    labels = [str(v) for v in labels]
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"{len(images)} images but {n} labels")
    if variants is not None:
        variants = [str(v) for v in variants]
        if len(variants) != n:
            raise ValueError(f"{n} images but {len(variants)} variants")
    for label in set(labels):
        _check_folder_name(label)
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"output folder {str(root)!r} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {str(root)!r} is not empty; pass overwrite=True to replace its images"
            )
        for label_dir in root.iterdir():
            if label_dir.is_dir():
                pattern = re.compile(rf"^{re.escape(label_dir.name)}_\d+\.png$")
                for f in label_dir.iterdir():
                    if f.is_file() and pattern.match(f.name):
                        f.unlink()
    rows: list[list[str]] = []
    for i, (img, label) in enumerate(zip(images, labels)):
        arr = np.asarray(img)
        if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"image {i}: expected a 2-d uint8 or uint16 array, got {arr.dtype} of shape {arr.shape}")
        rel = f"{label}/{label}_{i:05d}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(root / rel)  # uint8 -> L, uint16 -> I;16
        rows.append([rel, label] + ([variants[i]] if variants is not None else []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "organ"] + (["variant"] if variants is not None else []))
    writer.writerows(rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(buf.getvalue(), encoding="utf-8")
    logger.info("wrote %d image(s) in %d folder(s) under %s", n, len(set(labels)), root)
    return root
