"""Organ labels for pretraining: from subfolders, a manifest, ``y``, or DICOM headers."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .body_parts import OrganMapping, Resolution
from .cache.tag_index import TagIndex
from .io import ImageReadError, as_image_list

logger = logging.getLogger(__name__)


#: The header keywords read for organ_from="dicom": the body part, then the descriptions it falls back on.
ORGAN_TAGS = ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")
#: The tag index of these headers in ``cache_dir`` (one JSON list of the ORGAN_TAGS values per file).
ORGAN_INDEX_NAME = "organ_tags.jsonl"
#: Read beside :data:`ORGAN_TAGS` to tell a damaged file from one without organ tags: every DICOM
#: image has a SOP Class UID, and a file whose data set yields none of these has no readable header.
_PRESENCE_TAGS = ("SOPClassUID", "Modality")


def dicom_organ_tags(path: str | os.PathLike) -> str:
    """The :data:`ORGAN_TAGS` of a DICOM file (header only), as a JSON list of strings.

    Raises
    ------
    ImageReadError
        If the file is not a readable DICOM file.
    """
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError("organ_from='dicom' needs pydicom: pip install 'codafeat[dicom]'") from exc
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[*ORGAN_TAGS, *_PRESENCE_TAGS])
        values = [str(getattr(ds, k, "") or "").strip() for k in ORGAN_TAGS]
        found = [k for k in (*ORGAN_TAGS, *_PRESENCE_TAGS) if k in ds]
    except Exception as exc:
        raise ImageReadError(path, f"not a readable DICOM file ({exc})") from exc
    if not found:  # a file meta header followed by bytes that hold no data element (a damaged file)
        raise ImageReadError(
            path,
            "not a readable DICOM file (no data element after the file meta header: no SOP Class UID, "
            "Modality, BodyPartExamined or description)",
        )
    return json.dumps(values)


def dicom_body_part(path: str | os.PathLike) -> str:
    """The BodyPartExamined tag of a DICOM file as written (header only; ``""`` when empty).

    Raises
    ------
    ImageReadError
        If the file is not a readable DICOM file.
    """
    return json.loads(dicom_organ_tags(path))[0]


@dataclass(frozen=True)
class FileOrgan:
    """The organ one file gets, and where it came from (``codafeat organs`` prints these).

    ``source`` is ``"folder"``, ``"manifest"``, ``"labels"`` (``y``), or for DICOM tags
    ``"tag"``, ``"description"``, ``"user mapping"``, ``"unknown"`` (``organ`` is then
    ``None``) or ``"unreadable"`` (``raw`` is then the reason). ``raw`` is the label as
    found: the sub-folder, the manifest's value, or ``BodyPartExamined`` as written.
    """

    path: str
    organ: str | None
    source: str
    raw: str


def dicom_organs(paths: Sequence[Any], *, organ_map: Any = None, cache_dir: Any = None) -> list[FileOrgan]:
    """The organ of every DICOM file from its header (see :mod:`codafeat.data.body_parts`).

    With ``cache_dir`` the headers are kept in a :class:`~codafeat.data.cache.tag_index.TagIndex`
    there, so a later run reads only the headers of new or changed files; the mapping
    itself is applied on every run, so a changed ``organ_map`` needs no header read.
    """
    mapping = OrganMapping(organ_map)
    index = TagIndex(cache_dir, name=ORGAN_INDEX_NAME) if cache_dir is not None else None
    read = index.get if index is not None else (lambda p, f: f(p))
    out: list[FileOrgan] = []
    resolved: dict[str, Resolution] = {}  # an archive repeats a few header values: resolve each once
    for p in paths:
        try:
            tags = read(p, dicom_organ_tags)
        except ImageReadError as exc:
            out.append(FileOrgan(os.fspath(p), None, "unreadable", exc.reason))
            continue
        res = resolved.get(tags)
        if res is None:
            values = json.loads(tags)
            res = resolved[tags] = mapping.resolve(values[0], values[1:])
        out.append(FileOrgan(os.fspath(p), res.organ, res.source, res.raw))
    if index is not None:
        index.save()
    return out


def organ_table(files: Sequence[FileOrgan]) -> list[dict[str, Any]]:
    """``raw value -> organ`` rows with counts (most frequent first), as the model card records them.

    Examples
    --------
    >>> rows = organ_table([FileOrgan("a", "chest", "tag", "CHEST"), FileOrgan("b", "chest", "tag", "CHEST"),
    ...                     FileOrgan("c", None, "unknown", "FOO")])
    >>> for row in rows:
    ...     print(row)
    {'raw': 'CHEST', 'organ': 'chest', 'source': 'tag', 'count': 2}
    {'raw': 'FOO', 'organ': None, 'source': 'unknown', 'count': 1}
    """
    counts = Counter((f.raw, f.organ, f.source) for f in files if f.source != "unreadable")
    rows = [{"raw": r, "organ": o, "source": s, "count": n} for (r, o, s), n in counts.items()]
    return sorted(rows, key=lambda row: (-row["count"], row["raw"], str(row["organ"])))


def _unknown_message(unknown: Sequence[FileOrgan], where: Any) -> str:
    counts = Counter(f.raw for f in unknown)
    listed = ", ".join(f"{raw!r} ({n})" for raw, n in counts.most_common(20))
    more = f" and {len(counts) - 20} more" if len(counts) > 20 else ""
    return (
        f"{len(unknown)} DICOM file(s) in {where!r} have a BodyPartExamined value codafeat cannot map to an organ, "
        f"and no organ keyword in StudyDescription, SeriesDescription or ProtocolName: {listed}{more} "
        f"(e.g. {unknown[0].path!r}). Map them with organ_map={{'raw value': 'organ'}} (or a CSV raw,organ), "
        "or leave them out with on_error='skip'"
    )


def _dicom_items(X: Any, y: Any = None) -> list[Any]:
    """The files of ``X`` for organ_from="dicom": a folder, a manifest's paths, or a list of paths."""
    from .manifest import is_manifest, read_manifest_paths

    if y is not None:
        raise ValueError(
            "y must be None with organ_from='dicom' (organs come from the DICOM headers); "
            "to give the organs yourself, use organ_from='folder' with X and y"
        )
    if isinstance(X, np.ndarray) or not isinstance(X, (str, os.PathLike, Sequence)):
        raise ValueError(
            f"organ_from='dicom' needs file paths (a folder, a manifest or a list of paths), got {_what(X)}"
        )
    if isinstance(X, (str, os.PathLike)) and not os.path.exists(X):
        raise FileNotFoundError(
            f"{os.fspath(X)!r} does not exist (organ_from='dicom' needs a folder, a manifest or files)"
        )
    if is_manifest(X):
        items, organs = read_manifest_paths(X)
        if organs is not None:
            raise ValueError(
                f"manifest {os.fspath(X)!r} has an 'organ' column, but organ_from='dicom' takes the organs from the "
                "DICOM headers: drop the column, or use organ_from='folder' to train on the manifest's organs"
            )
    else:
        items = as_image_list(X)
    if len(items) == 0:
        raise ValueError(f"no images found in {X!r}")
    if any(not isinstance(i, (str, os.PathLike)) for i in items):
        raise ValueError("organ_from='dicom' needs file paths, got in-memory images")
    return list(items)


def _what(X: Any) -> str:
    return f"an array of shape {X.shape}" if isinstance(X, np.ndarray) else f"a {type(X).__name__}"


def describe_organs(
    X: Any, y: Any = None, *, organ_from: str = "folder", organ_map: Any = None, cache_dir: Any = None
) -> list[FileOrgan]:
    """What :func:`collect_organ_images` would give every file, and why (nothing raised for a file).

    Parameters are those of :func:`collect_organ_images`; folders and manifests are read the
    same way (and raise the same errors for a missing folder or a bad manifest).
    """
    from .manifest import is_manifest

    if organ_from == "dicom":
        return dicom_organs(_dicom_items(X, y), organ_map=organ_map, cache_dir=cache_dir)
    items, labels = collect_organ_images(X, y)[:2]  # the same reading, and the same errors
    if is_manifest(X):
        source = "manifest"
    elif isinstance(X, (str, os.PathLike)):
        source = "folder"
    else:
        source = "labels"
    return [
        FileOrgan(os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"[{i}]", str(o), source, str(o))
        for i, (p, o) in enumerate(zip(items, labels))
    ]


class OrganImages(NamedTuple):
    """What :func:`collect_organ_images` returns."""

    items: Sequence[Any]
    organs: np.ndarray
    skipped: list[str]
    #: For organ_from="dicom": the raw-value-to-organ table of :func:`organ_table` (else empty).
    mapping: list[dict[str, Any]]


def _dicom_organ_images(X: Any, y: Any, *, organ_map: Any, on_error: str, cache_dir: Any) -> OrganImages:
    """:func:`collect_organ_images` for ``organ_from="dicom"``."""
    files = dicom_organs(_dicom_items(X, y), organ_map=organ_map, cache_dir=cache_dir)
    unreadable = [f for f in files if f.source == "unreadable"]
    unknown = [f for f in files if f.source == "unknown"]
    if on_error == "raise" and unreadable:
        raise ImageReadError(unreadable[0].path, unreadable[0].raw)
    if on_error == "raise" and unknown:
        raise ValueError(_unknown_message(unknown, X))
    if unknown:
        counts = Counter(f.raw for f in unknown)
        logger.warning(
            "%d DICOM file(s) skipped: no organ for their BodyPartExamined value(s) %s",
            len(unknown),
            ", ".join(f"{raw!r} ({n})" for raw, n in counts.most_common(20)),
        )
    kept = [f for f in files if f.organ is not None]
    if not kept:
        raise ValueError(f"none of the {len(files)} DICOM file(s) in {X!r} has a readable header with a known organ")
    return OrganImages(
        [f.path for f in kept],
        np.asarray([f.organ for f in kept]),
        [f.path for f in unreadable + unknown],
        organ_table(files),
    )


def collect_organ_images(
    X: Any,
    y: Any = None,
    *,
    organ_from: str = "folder",
    organ_map: Any = None,
    on_error: str = "raise",
    cache_dir: Any = None,
) -> OrganImages:
    """``(items, organ_names, skipped, mapping)`` for pretraining.

    ``X`` is a folder with one subfolder per organ, a manifest (``.csv`` or ``.parquet``) with
    columns ``path`` and ``organ``, or a sequence of images with organ labels ``y``. With
    ``organ_from="dicom"`` the labels come from each file's header (``X`` is then a folder,
    a manifest whose paths are used, or a list of paths): ``BodyPartExamined`` normalised to
    an organ name, with the descriptions as fallback and ``organ_map`` first (see
    :mod:`codafeat.data.body_parts`). A file whose header cannot be read, or whose organ
    stays unknown, raises (the unknown values listed with their counts), or with
    ``on_error="skip"`` is left out and listed in ``skipped`` (empty otherwise). With
    ``cache_dir`` the headers are kept in a :class:`~codafeat.data.cache.tag_index.TagIndex`
    there, so a later run reads only the headers of new or changed files.
    """
    images = _collect_organ_images(
        X, y, organ_from=organ_from, organ_map=organ_map, on_error=on_error, cache_dir=cache_dir
    )
    check_organ_names(images.organs)
    return images


def check_organ_names(organs: Sequence[str]) -> None:
    """Raise ``ValueError`` for an organ name that cannot name a folder: organ names become
    folder and file names in reports, caches and the demo's output.

    A name must not be empty, ``.`` or ``..``, and holds no path separator (``/``, ``\\``)
    and no control character.

    Examples
    --------
    >>> check_organ_names(["chest", "hand left", "C-SPINE"])
    >>> check_organ_names(["chest", "../../etc"])
    Traceback (most recent call last):
    ...
    ValueError: organ name '../../etc' (1 image(s)) cannot be used: ...
    """
    counts = Counter(str(o) for o in organs)
    for name, n in counts.items():
        bad = (
            not name.strip()
            or name.strip() in (".", "..")
            or any(c in name for c in "/\\")
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
        )
        if bad:
            raise ValueError(
                f"organ name {name!r} ({n} image(s)) cannot be used: organ names become folder names in reports and "
                "caches, so they must not be empty, '.' or '..', and hold no '/', '\\' or control character; "
                "rename the organ (for DICOM headers, with organ_map)"
            )


def _collect_organ_images(
    X: Any, y: Any, *, organ_from: str, organ_map: Any, on_error: str, cache_dir: Any
) -> OrganImages:
    from .manifest import is_manifest, read_manifest, scan_organ_folder

    if organ_map is not None and organ_from != "dicom":
        raise ValueError(
            f"organ_map applies to organ_from='dicom' (DICOM header values), not organ_from={organ_from!r}"
        )
    if organ_from == "dicom":
        return _dicom_organ_images(X, y, organ_map=organ_map, on_error=on_error, cache_dir=cache_dir)
    if isinstance(X, (str, os.PathLike)):
        if is_manifest(X):
            if y is not None:
                raise ValueError("y must be None when X is a manifest (labels come from its 'organ' column)")
            paths, labels = read_manifest(X)
            return OrganImages(paths, np.asarray(labels).astype(str), [], [])
        if y is not None:
            raise ValueError("y must be None when X is a folder (organ = first-level subfolder)")
        paths, labels = scan_organ_folder(X)
        return OrganImages(paths, np.asarray(labels).astype(str), [], [])
    items = as_image_list(X)
    if y is None:
        raise ValueError(
            "organ labels are missing: pass y with X as a sequence of images, or give a folder "
            "with one subfolder per organ, or a CSV manifest (path, organ)"
        )
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(items):
        raise ValueError(
            f"y must be 1-d with one organ label per image: {len(items)} images, y of shape {labels.shape}"
        )
    return OrganImages(items, labels.astype(str), [], [])
