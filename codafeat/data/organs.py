"""Organ labels for pretraining: from subfolders, a CSV manifest, ``y``, or DICOM tags."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import ImageReadError, as_image_list
from .tag_index import TagIndex

logger = logging.getLogger(__name__)


def dicom_body_part(path: str | os.PathLike) -> str:
    """The BodyPartExamined tag of a DICOM file (header only).

    Raises
    ------
    ImageReadError
        If the file is not DICOM or has no (or an empty) BodyPartExamined.
    """
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError("organ_from='dicom' needs pydicom: pip install 'codafeat[dicom]'") from exc
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["BodyPartExamined"])
    except Exception as exc:
        raise ImageReadError(path, f"not a readable DICOM file ({exc})") from exc
    value = str(getattr(ds, "BodyPartExamined", "") or "").strip()
    if not value:
        raise ImageReadError(path, "DICOM file without a BodyPartExamined tag (needed by organ_from='dicom')")
    return value.lower()


def collect_organ_images(
    X: Any, y: Any = None, *, organ_from: str = "folder", on_error: str = "raise", cache_dir: Any = None
) -> tuple[Sequence[Any], np.ndarray, list[str]]:
    """``(items, organ_names, skipped)`` for pretraining.

    ``X`` is a folder with one subfolder per organ, a ``.csv`` manifest with columns
    ``path`` and ``organ``, or a sequence of images with organ labels ``y``. With
    ``organ_from="dicom"`` the labels come from each file's BodyPartExamined tag (``X``
    is then a folder or a list of paths); a file whose tag cannot be read raises, or
    with ``on_error="skip"`` is left out and listed in ``skipped`` (empty otherwise). With
    ``cache_dir`` the tags are kept in a :class:`~codafeat.data.tag_index.TagIndex` there, so
    a later run reads only the headers of new or changed files.
    """
    from .manifest import read_manifest, scan_organ_folder

    if organ_from == "dicom":
        if isinstance(X, (str, os.PathLike)) and Path(X).is_dir():
            items = as_image_list(X)
        elif isinstance(X, (str, os.PathLike)) and str(X).lower().endswith(".csv"):
            items, _ = read_manifest(X)
        else:
            items = as_image_list(X)
        if not items:
            raise ValueError(f"no images found in {X!r}")
        bad = [i for i in items if not isinstance(i, (str, os.PathLike))]
        if bad:
            raise ValueError("organ_from='dicom' needs file paths, got in-memory images")
        kept, organs, skipped = [], [], []
        index = TagIndex(cache_dir) if cache_dir is not None else None
        read = index.get if index is not None else (lambda p, f: f(p))
        for p in items:
            try:
                organs.append(read(p, dicom_body_part))
            except ImageReadError as exc:
                if on_error == "raise":
                    raise
                skipped.append(exc.path)
                continue
            kept.append(p)
        if index is not None:
            index.save()
        if not kept:
            raise ValueError(f"none of the {len(items)} DICOM file(s) in {X!r} has a readable BodyPartExamined tag")
        return kept, np.asarray(organs), skipped
    if isinstance(X, (str, os.PathLike)):
        if str(X).lower().endswith(".csv") and Path(X).is_file():
            if y is not None:
                raise ValueError("y must be None when X is a CSV manifest (labels come from its 'organ' column)")
            paths, labels = read_manifest(X)
            return paths, np.asarray(labels).astype(str), []
        if y is not None:
            raise ValueError("y must be None when X is a folder (organ = first-level subfolder)")
        paths, labels = scan_organ_folder(X)
        return paths, np.asarray(labels).astype(str), []
    items = as_image_list(X)
    if y is None:
        raise ValueError(
            "organ labels are missing: pass y with X as a sequence of images, or give a folder "
            "with one subfolder per organ, or a CSV manifest (path, organ)"
        )
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(items):
        raise ValueError(f"y must be 1-d with one organ label per image: {len(items)} images, y of shape {labels.shape}")
    return items, labels.astype(str), []
