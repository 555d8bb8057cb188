"""A summary of a training set for the model card: organs, counts, a hash of the files, DICOM tags."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .io import DICOM_SUFFIXES

#: DICOM headers read for the summary at most (evenly spaced over the DICOM files).
MAX_DICOM_HEADERS = 256


def files_digest(items: Sequence[Any]) -> str | None:
    """SHA-256 of the sorted file paths relative to their common folder; ``None`` for in-memory images.

    The same folder tree gives the same digest on any machine.

    Examples
    --------
    >>> files_digest(["/a/x/1.png", "/a/y/2.png"]) == files_digest(["/b/y/2.png", "/b/x/1.png"])
    True
    >>> files_digest([]) is None
    True
    """
    paths = [os.fspath(p) for p in items if isinstance(p, (str, os.PathLike))]
    if not paths or len(paths) != len(items):
        return None
    paths = [p if os.path.isabs(p) else os.path.abspath(p) for p in paths]
    # the common folder from the two extreme paths (commonpath over all of them is slow at 100k)
    prefix = os.path.commonprefix([min(paths), max(paths)])
    root = prefix if prefix.endswith(os.sep) and len(paths) > 1 else os.path.dirname(prefix)
    cut = len(os.path.join(root, ""))
    h = hashlib.sha256()
    for rel in sorted(p[cut:] for p in paths):
        h.update(rel.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _dicom_tags(paths: Sequence[str]) -> dict[str, Any]:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - DICOM files cannot have been read without it
        return {}
    take = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), MAX_DICOM_HEADERS)).astype(int))
    makers: Counter = Counter()
    parts: Counter = Counter()
    for i in take:
        try:
            ds = pydicom.dcmread(paths[int(i)], stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a header that cannot be read is not counted
            continue
        makers[str(getattr(ds, "Manufacturer", "") or "unknown").strip() or "unknown"] += 1
        parts[str(getattr(ds, "BodyPartExamined", "") or "unknown").strip() or "unknown"] += 1
    return {"dicom_manufacturers": dict(makers), "dicom_body_parts": dict(parts), "dicom_sampled": int(len(take))}


def training_data_summary(items: Sequence[Any], organs: Sequence[Any]) -> dict[str, Any]:
    """``organs`` (name -> count), ``n_images``, ``files_sha256`` and, for DICOM files, their tags.

    Examples
    --------
    >>> training_data_summary(["a/chest/1.png", "a/chest/2.png", "a/hand/3.png"], ["chest", "chest", "hand"])["organs"]
    {'chest': 2, 'hand': 1}
    """
    counts = Counter(str(o) for o in np.asarray(organs).tolist())
    summary: dict[str, Any] = {
        "organs": dict(sorted(counts.items())),
        "n_images": int(len(items)),
        "files_sha256": files_digest(items),
    }
    dicom = [os.fspath(p) for p in items
             if isinstance(p, (str, os.PathLike)) and os.path.splitext(os.fspath(p))[1].lower() in DICOM_SUFFIXES]
    if dicom:
        summary.update(_dicom_tags(dicom))
    return summary
