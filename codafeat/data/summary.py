"""A summary of a training set for the model card: organs, counts, a hash of the files, DICOM tags."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .io import DICOM_SUFFIXES

#: DICOM headers read for the summary at most (a bottom-k sample of the DICOM files, see dicom_sample).
MAX_DICOM_HEADERS = 256
#: The :class:`~codafeat.data.cache.tag_index.TagIndex` file of the sampled headers in ``cache_dir``.
SUMMARY_INDEX_NAME = "summary-tags.jsonl"


def _relative(paths: list[str]) -> list[str]:
    """``paths`` (absolute) relative to their common folder (found from the two extreme paths)."""
    prefix = os.path.commonprefix([min(paths), max(paths)])  # commonpath over all of them is slow at 100k
    root = prefix if prefix.endswith(os.sep) and len(paths) > 1 else os.path.dirname(prefix)
    cut = len(os.path.join(root, ""))
    return [p[cut:] for p in paths]


def _file_paths(items: Sequence[Any]) -> list[str] | None:
    paths = [os.fspath(p) for p in items if isinstance(p, (str, os.PathLike))]
    if not paths or len(paths) != len(items):
        return None
    return [p if os.path.isabs(p) else os.path.abspath(p) for p in paths]


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
    paths = _file_paths(items)
    if paths is None:
        return None
    text = "".join(rel + "\n" for rel in sorted(_relative(paths)))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def dicom_sample(paths: Sequence[str], k: int = MAX_DICOM_HEADERS) -> list[str]:
    """At most ``k`` of ``paths``: those whose relative path hashes lowest (a bottom-k sample).

    The sample depends only on the relative paths, so the same tree gives the same sample on
    any machine, and adding or removing 1 % of the files changes about 1 % of it (an evenly
    spaced sample would shift almost entirely); :class:`~codafeat.data.cache.tag_index.TagIndex`
    then reads only the new headers.

    Examples
    --------
    >>> paths = [f"/data/chest/{i}.dcm" for i in range(1000)]
    >>> sample = dicom_sample(paths, 10)
    >>> len(sample), len(set(sample) & set(dicom_sample(paths + ["/data/chest/new.dcm"], 10))) >= 9
    (10, True)
    """
    paths = list(paths)
    if len(paths) <= k:
        return paths
    rel = _relative(paths)
    order = sorted(
        range(len(paths)),
        key=lambda i: hashlib.blake2b(rel[i].encode("utf-8", "surrogateescape"), digest_size=8).digest(),
    )
    return [paths[i] for i in sorted(order[:k])]


def _read_header(path: str) -> str:
    """``"manufacturer\tbody part"`` of a DICOM file (``unknown`` where absent); ``"\t"`` if unreadable."""
    import pydicom  # here: a run whose headers are all in the index does not import it

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - a header that cannot be read is not counted
        return "\t"
    maker = str(getattr(ds, "Manufacturer", "") or "unknown").strip() or "unknown"
    part = str(getattr(ds, "BodyPartExamined", "") or "unknown").strip() or "unknown"
    return f"{maker}\t{part}"


def _dicom_tags(paths: Sequence[str], cache_dir: Any = None) -> dict[str, Any]:
    from .cache.tag_index import TagIndex

    take = dicom_sample(paths)
    index = TagIndex(cache_dir, name=SUMMARY_INDEX_NAME) if cache_dir is not None else None
    read = index.get if index is not None else (lambda p, f: f(p))
    makers: Counter = Counter()
    parts: Counter = Counter()
    for p in take:
        try:
            maker, part = read(p, _read_header).split("\t", 1)
        except ImportError:  # pragma: no cover - DICOM files cannot have been decoded without pydicom
            return {}
        if maker:  # an unreadable header is not counted
            makers[maker] += 1
            parts[part] += 1
    if index is not None:
        index.save()
    return {"dicom_manufacturers": dict(makers), "dicom_body_parts": dict(parts), "dicom_sampled": int(len(take))}


def training_data_summary(items: Sequence[Any], organs: Sequence[Any], *, cache_dir: Any = None) -> dict[str, Any]:
    """``organs`` (name -> count), ``n_images``, ``files_sha256`` and, for DICOM files, their tags.

    The tags (manufacturer, body part) are read from at most :data:`MAX_DICOM_HEADERS`
    headers (:func:`dicom_sample`); with ``cache_dir`` they are kept in a
    :class:`~codafeat.data.cache.tag_index.TagIndex` there, so an unchanged file's header is read
    once across runs.

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
    suffixes = tuple(DICOM_SUFFIXES)
    files = [os.fspath(i) for i in items if isinstance(i, (str, os.PathLike))]
    dicom = [p if os.path.isabs(p) else os.path.abspath(p) for p in files if p.lower().endswith(suffixes)]
    if dicom:
        summary.update(_dicom_tags(dicom, cache_dir))
    return summary
