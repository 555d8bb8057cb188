"""Inputs before decoding: which files are images, folders walked, sequences checked, errors named.

Part of the pixel contract of :mod:`codafeat.data.io` (read that module's docs first).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ImageLike",
    "ImageReadError",
    "as_image_list",
    "check_on_error",
    "describe",
    "find_images",
    "is_image_file",
    "report_skipped",
]

logger = logging.getLogger("codafeat.data.io")

#: File suffixes recognised as images when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".pgm", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_SUFFIX_TUPLE = tuple(sorted(IMAGE_SUFFIXES))

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]


class ImageReadError(ValueError):
    """An image could not be read; ``path`` names the file (or the input's index).

    Examples
    --------
    >>> from codafeat.data.io import read_image
    >>> try:
    ...     read_image("no_such_file.png")
    ... except ImageReadError as exc:
    ...     print(exc.path, "|", exc.reason)
    no_such_file.png | no such file
    """

    def __init__(self, path: Any, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")

    def __reduce__(self):  # keep (path, reason) across DataLoader worker processes
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- finding files
def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a recognised image suffix (see :data:`IMAGE_SUFFIXES`).

    Examples
    --------
    >>> is_image_file("a/knee.PNG"), is_image_file("a/notes.txt"), is_image_file("a/png")
    (True, False, False)
    """
    name = os.path.basename(os.fspath(path))
    # str.endswith with a tuple: 5x faster than splitext at a million files; a hidden name
    # such as ".png" has no suffix for splitext either
    return name.lower().endswith(_SUFFIX_TUPLE) and not name.startswith(".")


def find_images(folder: str | os.PathLike) -> list[str]:
    """All image files under ``folder``, recursively, sorted by path; hidden entries are skipped.

    Symbolic links to directories are followed (``data/chest -> /archive/chest`` is the
    organ ``chest``), and each real directory is visited once, so a link loop cannot
    recurse forever and a directory linked twice is not read twice (the second link is
    logged). Files without an image suffix are not images and are ignored, but counted
    and logged.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    # Depth first, every folder's entries sorted by name: the same order as sorting the paths
    # by their components, without that sort (and string operations only: a million files).
    found: list[str] = []
    ignored = 0
    seen: set[tuple[int, int]] = set()
    stack = [_sorted_entries(os.path.join(str(root), "")[:-1], seen)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path, is_dir = entry
        if is_dir:
            stack.append(_sorted_entries(path, seen))
        elif path.lower().endswith(_SUFFIX_TUPLE):
            found.append(path)
        else:
            ignored += 1
    if ignored:
        logger.info("%s: ignored %d file(s) without an image suffix", root, ignored)
    return found


def _sorted_entries(folder: str, seen: set[tuple[int, int]]) -> Iterator[tuple[str, bool]]:
    """``(path, is_dir)`` of ``folder``'s visible entries by name; nothing for a folder already read."""
    try:
        st = os.stat(folder or os.sep)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: already read
            logger.info("%s: already read through another path (symbolic link), not read again", folder)
            return iter(())
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder or os.sep) as it:
            names = sorted((e.name, e) for e in it if not e.name.startswith("."))
    except OSError:
        return iter(())
    out = []
    for name, e in names:
        try:
            is_dir = e.is_dir()  # follows symbolic links
        except OSError:
            is_dir = False
        out.append((folder + os.sep + name, is_dir))
    return iter(out)


def as_image_list(X: Any) -> Sequence[ImageLike]:
    """Normalise the accepted input forms to a sequence of single images.

    Accepted: a folder path (all images found recursively, sorted), a single file path,
    a sequence of file paths, arrays or PIL images (sizes may differ), a ``(n, h, w)`` or
    ``(n, h, w, c)`` array (``c`` in 1, 3, 4), a 1-d array of paths, a pandas Series, or a
    one-column DataFrame. Arrays are not copied.

    Raises
    ------
    ValueError
        An array of another shape, a DataFrame with several columns, or a folder without
        images.
    TypeError
        Any other type.
    """
    if isinstance(X, (str, os.PathLike)):
        if Path(X).is_dir():
            found = find_images(X)
            if not found:
                raise ValueError(
                    f"no image files found in folder {os.fspath(X)!r} (suffixes: {sorted(IMAGE_SUFFIXES)})"
                )
            return found
        return [X]
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim == 1 or (X.ndim == 2 and X.shape[1] == 1):
                return [x.decode() if isinstance(x, bytes) else x for x in X.ravel()]
            return _bad_x(X)
        if X.ndim == 3 or (X.ndim == 4 and X.shape[-1] in (1, 3, 4)):
            return X  # indexable: X[i] is one image
        return _bad_x(X)
    if isinstance(X, Image.Image):
        return [X]
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame, without importing pandas
        if X.shape[1] != 1:
            raise ValueError(
                f"a DataFrame input must have exactly one column of images, got {X.shape[1]} columns "
                f"({list(X.columns)[:5]}); select it, e.g. df['path']"
            )
        return list(X.iloc[:, 0])
    if hasattr(X, "iloc"):  # pandas Series
        return list(X)
    if isinstance(X, Iterable) and not isinstance(X, (bytes, dict)):
        return list(X)
    raise TypeError(
        "X must be a folder, a sequence of file paths / arrays / PIL images, or an array of "
        f"shape (n, h, w) or (n, h, w, c); got {type(X).__name__}"
    )


def _bad_x(X: np.ndarray) -> Sequence[ImageLike]:
    raise ValueError(
        "an array X must have shape (n_images, h, w) or (n_images, h, w, c) with c in "
        f"(1, 3, 4), or be a 1-d array of paths; got shape {X.shape} and dtype {X.dtype}"
    )


def describe(item: Any, index: int | None = None) -> str:
    """A short name for an input image, for error messages: its path, or its index."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"<{type(item).__name__} at index {index}>" if index is not None else f"<{type(item).__name__}>"


def check_on_error(on_error: str) -> None:
    """Validate an ``on_error`` parameter."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def report_skipped(skipped: Sequence[str], *, context: str = "") -> None:
    """Log a warning listing skipped images (nothing is dropped silently)."""
    if not skipped:
        return
    shown = ", ".join(skipped[:10]) + (f", ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
    logger.warning("%sskipped %d unreadable image(s): %s", f"{context}: " if context else "", len(skipped), shown)
