"""Writing files so that a crash never leaves a half-written one, and checking before long work.

Every file codafeat writes (weights, checkpoints, caches, embeddings, wheels) goes through
:func:`atomic_open`: a temporary file in the target's folder, flushed and fsynced, then
renamed onto the target, with the usual permissions (``0o666`` less the umask). A set of
files that belong together (embeddings and their path list) is written with
:func:`atomic_write_many`: every file is complete on disk before the first rename.
:func:`check_writable` fails fast, before hours of training, on a folder that cannot
be written or lacks the space a result needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "TEMP_PATTERN",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_many",
    "check_free_space",
    "check_writable",
    "remove_stale_temps",
]

#: Names of the temporary files :func:`atomic_open` writes: ``.<target>.<12 hex>.tmp``.
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmp$")


def _temp_path(target: Path) -> Path:
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make a rename itself durable
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; rename it onto ``path`` on success.

    If the ``with`` block (or the final flush/rename) fails, the temporary file is
    removed and ``path`` keeps its previous content. The new file gets the usual
    permissions (``0o666`` less the umask), not those of a private temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = _temp_path(target)
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash never leaves a half-written file there."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_many(files: Mapping[str | os.PathLike, bytes]) -> list[Path]:
    """Write several files as a set: all are written and fsynced before the first rename.

    A failure while writing (a full disk, a read-only folder) leaves every target as it
    was. Only the renames themselves, which do not allocate space, come after that point.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_path(target)
            with open(tmp, "xb") as fh:
                staged.append((tmp, target))
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    for folder in {t.parent for _, t in staged}:
        _fsync_dir(folder)
    return [t for _, t in staged]


def check_writable(path: str | os.PathLike, *, what: str, is_dir: bool = False, need_bytes: int = 0) -> Path:
    """Fail now, with a message naming ``what``, if ``path`` cannot be written later.

    ``is_dir``: ``path`` is a folder (created if missing) that must hold new files;
    else ``path`` is a file whose folder must accept it (and which must not be a
    folder). A probe file is created and removed. ``need_bytes``: the free space
    required there, where the file system reports it.

    Raises
    ------
    OSError
        Not writable, not a folder / a folder where a file is expected, or too little space.
    """
    p = Path(path).expanduser()
    if is_dir:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{what} {str(p)!r} exists and is not a folder")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"{what} {str(p)!r} cannot be created ({exc.strerror or exc})") from exc
        folder = p
    else:
        if p.is_dir():
            raise IsADirectoryError(f"{what} {str(p)!r} is a folder, expected a file name")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"the folder of {what} {str(p)!r} cannot be created ({exc.strerror or exc})"
                ) from exc
    probe = _temp_path(folder / ".codafeat-write-probe")
    try:
        with open(probe, "xb") as fh:
            fh.write(b"probe")
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {str(p)!r} is not writable ({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    if need_bytes:
        check_free_space(folder, need_bytes, what=f"{what} {str(p)!r}")
    return p


def check_free_space(folder: str | os.PathLike, need_bytes: int, *, what: str) -> None:
    """Raise ``OSError`` (ENOSPC) naming ``what`` when ``folder`` has less than ``need_bytes`` free.

    Nothing is checked where the file system does not report its free space.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need_bytes:
        raise OSError(28, f"{what}: {free / 2**20:.0f} MiB free, {need_bytes / 2**20:.0f} MiB needed")


def remove_stale_temps(folder: str | os.PathLike, target_name: str) -> list[Path]:
    """Remove the temporary files :func:`atomic_open` left in ``folder`` for ``target_name``
    (a write killed before its rename). Only names of its own pattern are touched."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        m = TEMP_PATTERN.match(child.name)
        if m and m.group("target") == target_name and child.is_file():
            with contextlib.suppress(OSError):
                child.unlink()
                removed.append(child)
    return removed


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    *,
    inputs: Sequence[str | os.PathLike] = (),
    refuse_existing: Callable[[str, Path], str | None] | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse, before any work, output paths that would destroy the model or an input.

    ``outputs`` maps a name (``"--out"``) to a path (``None``: not written). Refused:
    two outputs that are the same file; an output that is one of ``inputs`` or lies inside
    an input folder; and, unless ``overwrite``, an existing file for which
    ``refuse_existing(name, path)`` names what the file should have been (say, "codafeat
    weights"); it returns ``None`` for a file that may be replaced.

    Raises
    ------
    ValueError
        Naming the option and the path.

    Examples
    --------
    >>> check_outputs({"--out": "m.safetensors", "--history": "m.safetensors"})
    Traceback (most recent call last):
    ...
    ValueError: --out and --history are the same file ...: one would overwrite the other
    """
    paths = {what: Path(os.path.realpath(Path(p).expanduser())) for what, p in outputs.items() if p is not None}
    seen: dict[Path, str] = {}
    for what, p in sorted(paths.items()):
        if p in seen:
            raise ValueError(f"{what} and {seen[p]} are the same file ({p}): one would overwrite the other")
        seen[p] = what
    sources = [Path(os.path.realpath(Path(q).expanduser())) for q in inputs]
    for what, p in paths.items():
        for q in sources:
            if p == q:
                raise ValueError(f"{what} {p} is one of the inputs: writing it would destroy that input")
            if q.is_dir() and q in p.parents:
                raise ValueError(f"{what} {p} lies inside the input folder {q}: write it outside the inputs")
        wanted = refuse_existing(what, p) if p.is_file() and not overwrite and refuse_existing is not None else None
        if wanted:
            raise ValueError(f"{what} {p} exists and is not {wanted}; pass --overwrite to replace it")
