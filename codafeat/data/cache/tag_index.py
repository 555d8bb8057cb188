"""A persistent index of DICOM tags, so that each file's header is read once across runs.

``organ_from="dicom"`` labels every file by its ``BodyPartExamined`` tag: one header read
per file and run, which for an archive of a million DICOM files is the slow part of
starting. :class:`TagIndex` keeps ``identity -> tag`` (identity: absolute path, size,
modification time; see :func:`codafeat.data.cache.shards.identity`) in ``<cache_dir>/tags.jsonl``.
A changed file has another identity, so its header is read again, and a new file is read
once. The index is rewritten atomically after each run, keeping only the files of that run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._fileio import atomic_write_bytes
from .shards import identity

logger = logging.getLogger(__name__)

INDEX_NAME = "tags.jsonl"


class TagIndex:
    """``tag = index.get(path, read)``: the stored tag of an unchanged file, else ``read(path)``.

    Parameters
    ----------
    cache_dir : str or path
        Folder of the index file.
    name : str, default="tags.jsonl"
        The index file's name (one per kind of tag: the organ labels, the model card's sample).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "a.dcm").write_bytes(b"x")
    1
    >>> calls = []
    >>> def read(p):
    ...     calls.append(p)
    ...     return "chest"
    >>> with TagIndex(folder) as index:
    ...     index.get(str(folder / "a.dcm"), read)
    'chest'
    >>> with TagIndex(folder) as index:  # the next run reads nothing
    ...     index.get(str(folder / "a.dcm"), read)
    'chest'
    >>> len(calls)
    1
    """

    def __init__(self, cache_dir: str | os.PathLike, *, name: str = INDEX_NAME) -> None:
        self.path = Path(cache_dir) / name
        self._old: dict[str, str] = {}
        self._new: dict[str, str] = {}
        self.hits = self.reads = 0
        if self.path.is_file():
            try:
                lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line]
                # one parse of all lines as a JSON array: several times faster than a parse per line at 100k lines
                self._old = {rec["id"]: rec["tag"] for rec in json.loads("[" + ",".join(lines) + "]")}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("%s is unreadable (%s): reading every DICOM header again", self.path, exc)
                self._old = {}

    def get(self, path: str | os.PathLike, read: Callable[[Any], str]) -> str:
        key = identity(path, 0).decode("utf-8", "surrogatepass")
        tag = self._old.get(key)
        if tag is None:
            tag = read(path)
            self.reads += 1
        else:
            self.hits += 1
        self._new[key] = tag
        return tag

    def save(self) -> None:
        """Write the index of this run's files (nothing is written when it is the stored one)."""
        if self._new == self._old and self.path.is_file():
            logger.info("DICOM tag index %s: %d header(s) reused, unchanged", self.path, self.hits)
            return
        data = "".join(json.dumps({"id": k, "tag": v}) + "\n" for k, v in self._new.items())
        atomic_write_bytes(self.path, data.encode("utf-8"))
        logger.info("DICOM tag index %s: %d header(s) read, %d reused", self.path, self.reads, self.hits)

    def __enter__(self) -> TagIndex:
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        if exc_type is None:
            self.save()
