"""Decode every training image once, resized, into a uint8 array reused across epochs and runs.

Decoding a full-size radiograph (a 1024-px PNG, a DICOM) costs milliseconds, every
epoch, in every data worker; the views only need a little more than ``image_size``
pixels. :class:`DecodedCache` decodes each input once with
:func:`codafeat.data.io.load_image`, squashes it to ``cache_size`` x ``cache_size``
(:func:`cache_size_for`: ``round(image_size * 8 / 7)``, 256 for 224, the usual
"resize to 256, crop 224" margin) and stores it as ``uint8``.

With ``cache_dir`` the images are stored in shards (:mod:`codafeat.data.cache.shards`): raw
``uint8`` files read through :class:`numpy.memmap` (shared by all data workers and ranks
through the page cache), with a small JSON set index ``decoded-<key>.json``. The key is the
SHA-256 of the format version, ``cache_size``, the intensity rule and, for each input, its
absolute path, size and modification time in nanoseconds (arrays and PIL images: their
content). The same inputs reuse the cache without decoding anything. Shard boundaries
follow the content, so after adding or removing 1 % of the files only about 1 % of the
shards are decoded again. Each shard, and then the set index, is written to a temporary
name and renamed into place: a crash loses at most the shards being written, and never
leaves a cache that looks valid. Building is idempotent: under ``torchrun`` rank 0 builds,
the other ranks wait at a barrier and then open it with the same call.

Precision: images are stored as ``uint8``, ``round(255 * x)`` of the [0, 1] scaling. 8-bit
sources lose nothing; others keep 256 grey levels of their scaled range, a 0.4 % step far
below the views' intensity jitter, at half the size of ``uint16``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as _io
from . import background_fill as _fill
from . import decode_pool as _pool
from . import shard_build as _build
from . import shards as _shards

logger = logging.getLogger(__name__)

__all__ = ["DecodedCache", "cache_size_for"]

#: Bumped when the stored layout or the decoding rules change (part of the key).
FORMAT_VERSION = _shards.SET_VERSION
_FORMAT = _shards.SET_FORMAT


def cache_size_for(image_size: int) -> int:
    """The cache side for views of ``image_size``: ``round(image_size * 8 / 7)`` (256 for 224)."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return max(1, round(int(image_size) * 8 / 7))


class DecodedCache:
    """Decoded, resized ``uint8`` images: ``cache[i]`` is a ``(cache_size, cache_size)`` array.

    Make one with :meth:`build` (decode, or reuse a file built before) or :meth:`open`.

    Attributes
    ----------
    cache_size : int
        Side of the stored images.
    kept : ndarray of int64
        For each cached image, the index of its input in ``items`` (align labels with
        ``labels[cache.kept]``).
    skipped : list of str
        Inputs that could not be read (``on_error="skip"``), in input order.
    key : str or None
        The content key (None for in-memory caches).
    path : Path or None
        The set index file (None for in-memory caches); the images are in its shards.

    Examples
    --------
    >>> import numpy as np
    >>> cache = DecodedCache.build([np.zeros((40, 30), np.uint8), np.ones((8, 8))], 16)
    >>> len(cache), cache[1].shape, cache[1].dtype, int(cache[1].max())
    (2, (16, 16), dtype('uint8'), 255)
    """

    def __init__(
        self,
        array: np.ndarray,
        *,
        kept: np.ndarray,
        skipped: Sequence[str] = (),
        reasons: Sequence[str] = (),
        key: str | None = None,
        path: Path | None = None,
        kinds: dict[str, int] | None = None,
        shards: Sequence[tuple[Path, int]] | None = None,
        pending: dict[int, tuple[str, list[str]]] | None = None,
        bit_depth: int | None = None,
    ) -> None:
        if array.ndim != 3 or array.shape[1] != array.shape[2] or array.dtype != np.uint8:
            raise ValueError(f"a decoded cache is a (n, s, s) uint8 array, got {array.dtype} {array.shape}")
        self._shard_files = list(shards or [])
        self._pending = dict(pending or {})  # shard position -> (key, paths): not on disk yet
        self._bit_depth = bit_depth
        self._open_shards(array.shape[1])
        n = len(array) if not self._shard_files else int(self._offsets[-1])
        if len(kept) != n:
            raise ValueError(f"kept has {len(kept)} entries for {n} images")
        self._array = array
        self.cache_size = int(array.shape[1])
        self.kept = np.asarray(kept, dtype=np.int64)
        self.skipped = list(skipped)
        self.reasons = list(reasons)
        self.key = key
        self.path = path
        #: How many images each intensity rule scaled (:data:`codafeat.data.io.INTENSITY_KINDS`).
        self.kinds = dict(kinds or {})

    def _open_shards(self, size: int) -> None:
        pending = getattr(self, "_pending", {})
        self._maps = [
            None if s in pending else np.memmap(p, dtype=np.uint8, mode="r", shape=(n, size, size))
            for s, (p, n) in enumerate(self._shard_files)
            if n
        ]
        counts = [n for _, n in self._shard_files if n]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._offsets[-1]) if self._shard_files else int(self._array.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        if not self._shard_files:
            return self._array[i]
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"decoded cache index {i} out of range for {len(self)} images")
        s = int(np.searchsorted(self._offsets, i, side="right")) - 1
        if self._maps[s] is None and not self._open_pending(s):
            skey, paths = self._pending[s]
            j = i - int(self._offsets[s])
            img = _io.decode_image(paths[j], size=self.cache_size, index=i, bit_depth=self._bit_depth)
            return _shards.to_u8(img)  # the bytes the shard will hold
        return self._maps[s][i - self._offsets[s]]

    def _open_pending(self, s: int) -> bool:
        """Memory-map shard ``s`` if the background fill has written it since, and count its intensity kinds."""
        skey, _ = self._pending[s]
        try:
            array, meta = _shards.open_shard(self._shard_files[s][0].parent, skey)
        except (FileNotFoundError, ValueError):
            return False
        self._maps[s] = array
        del self._pending[s]
        for kind, n in (meta.get("kinds") or {}).items():
            self.kinds[kind] = self.kinds.get(kind, 0) + int(n)
        return True

    @property
    def array(self) -> np.ndarray:
        """All images, ``(n, cache_size, cache_size)`` ``uint8`` (for a sharded cache, a copy in memory)."""
        if not self._shard_files:
            return self._array
        return np.concatenate(self._maps) if self._maps else np.empty((0, self.cache_size, self.cache_size), np.uint8)

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else "in memory"
        return (
            f"{type(self).__name__}(n={len(self)}, cache_size={self.cache_size}, skipped={len(self.skipped)}, {where})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # A file-backed cache travels (to DataLoader workers, spawned ranks) as its path,
        # not as a copy of the whole array.
        state = self.__dict__.copy()
        state.pop("_maps", None)
        state.pop("_proc", None)
        if self._shard_files:
            state["_array"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_shards(self.cache_size)
        if self._array is None:
            self._array = np.empty((0, self.cache_size, self.cache_size), np.uint8)

    # ------------------------------------------------------------------ key / files
    @staticmethod
    def cache_key(items: Sequence[Any], cache_size: int, bit_depth: int | None = None) -> str:
        """The content key of ``items`` at ``cache_size`` (hex SHA-256, see the module doc)."""
        return DecodedCache._key_of(_shards.identity_list(items), cache_size, bit_depth)

    @staticmethod
    def _key_of(ids: Sequence[bytes], cache_size: int, bit_depth: int | None) -> str:
        depth = "" if bit_depth is None else f"\0bits{int(bit_depth)}"
        h = hashlib.sha256(f"{_FORMAT}\0{FORMAT_VERSION}\0{int(cache_size)}\0{len(ids)}{depth}\n".encode())
        for ident in ids:
            h.update(ident)
        return h.hexdigest()

    @classmethod
    def open(
        cls, cache_dir: str | os.PathLike, key: str, *, layout: Sequence[Sequence[Any]] | None = None
    ) -> DecodedCache:
        """Open the cache with ``key`` in ``cache_dir`` (read-only memmaps of its shards).

        ``layout`` (the shards the images map to, when the caller knows the images) is
        checked against the index, so that an edited index cannot pair images with the
        wrong rows.

        Raises
        ------
        FileNotFoundError
            No complete cache with this key (the set index is written last).
        ValueError
            The index or a shard is inconsistent (names the file).
        """
        root = Path(cache_dir)
        index_path = _shards.set_index_path(root, key)
        index = _shards.read_meta(index_path, _FORMAT, key, "decoded cache index")
        if index.get("version") != FORMAT_VERSION:
            raise ValueError(f"{str(index_path)!r}: unsupported version {index.get('version')!r}")
        size = int(index["cache_size"])
        if layout is not None and [list(x) for x in index["shards"]] != [list(x) for x in layout]:
            raise ValueError(
                f"decoded cache {str(index_path)!r}: its shards disagree with the images' layout (an edited index)"
            )
        files, kept, skipped, reasons, kinds = [], [], [], [], Counter()
        for lo, hi, skey in index["shards"]:
            try:
                array, meta = _shards.open_shard(root, skey)
            except FileNotFoundError as exc:
                raise ValueError(f"decoded cache {str(index_path)!r}: shard {skey[:12]} is missing") from exc
            if meta.get("n_items") != hi - lo:
                raise ValueError(
                    f"decoded cache {str(index_path)!r}: shard {skey[:12]} holds {meta.get('n_items')} "
                    f"images but the index places it at {lo}..{hi} (an edited index)"
                )
            files.append((_shards.paths(root, skey)[0], len(array)))
            kept.extend(meta["kept"])
            skipped.extend(name for _, name, _ in meta["skipped"])
            reasons.extend(reason for _, _, reason in meta["skipped"])
            kinds.update(meta["kinds"])
        return cls(
            np.empty((0, size, size), np.uint8),
            kept=np.asarray(kept, dtype=np.int64),
            skipped=skipped,
            reasons=reasons,
            key=key,
            path=index_path,
            kinds=dict(kinds),
            shards=files,
        )

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        items: Sequence[Any],
        cache_size: int,
        *,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        num_workers: int = 0,
        verbose: int = 0,
        bit_depth: int | None = None,
        wait: bool = True,
    ) -> DecodedCache:
        """Decode ``items`` to ``cache_size`` x ``cache_size`` uint8, or reuse a matching cache.

        Parameters
        ----------
        items : sequence
            File paths, arrays or PIL images (see :func:`codafeat.data.io.load_image`).
        cache_size : int
            Side of the stored images (see :func:`cache_size_for`).
        cache_dir : path, optional
            Folder for the memory-mapped cache; created if needed. Without it the cache
            is an in-memory array (nothing reused across runs).
        on_error : {"raise", "skip"}
            ``"skip"`` leaves unreadable inputs out (``skipped``, ``kept``) and logs a
            warning listing them, also when an existing cache is reused.
        num_workers : int, default=0
            Decode in this many worker processes (0: in this process).
        verbose : int, default=0
            ``>= 1`` shows a progress bar while decoding.

        bit_depth : int or None, default=None
            Fixed bit depth of integer images of more than 8 bits (see
            :func:`codafeat.data.io.decode_image`); part of the cache key. The rules applied
            are counted in ``kinds``.
        wait : bool, default=True
            ``False`` returns at once, while a background process fills the missing shards.
            This needs ``cache_dir``, file paths and ``on_error="raise"``; otherwise the call
            waits. Until a shard is on disk, its images are decoded on access, to the very
            same bytes, so training can start before the cache is complete. Call
            :meth:`finish` to wait for the fill (``kinds`` are complete after it).

        Returns
        -------
        DecodedCache

        Raises
        ------
        ImageReadError
            An unreadable input with ``on_error="raise"`` (also when a cache built with
            ``"skip"`` is reused).
        ValueError
            Bad parameters, no input, or no readable input.
        """
        _io.check_on_error(on_error)
        if isinstance(cache_size, bool) or not isinstance(cache_size, (int, np.integer)) or cache_size < 1:
            raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        cache_size = int(cache_size)
        bit_depth = _io.check_bit_depth(bit_depth)
        if len(items) == 0:
            raise ValueError("no images to decode: items is empty")
        if cache_dir is None:
            cache = cls._decode_to_memory(items, cache_size, on_error, int(num_workers), verbose, bit_depth)
        else:
            ids = _shards.identity_list(items)
            key = cls._key_of(ids, cache_size, bit_depth)
            try:
                cache = cls.open(cache_dir, key, layout=_shards.layout(ids, cache_size, bit_depth))
                logger.info("reusing decoded cache %s (%d images)", cache.path, len(cache))
            except FileNotFoundError:
                lazy = not wait and on_error == "raise" and all(isinstance(i, (str, os.PathLike)) for i in items)
                build = cls._decode_in_background if lazy else cls._decode_to_shards
                cache = build(
                    items, ids, cache_size, Path(cache_dir), key, on_error, int(num_workers), verbose, bit_depth
                )
            except ValueError as exc:
                logger.warning("rebuilding decoded cache: %s", exc)
                cache = cls._decode_to_shards(
                    items, ids, cache_size, Path(cache_dir), key, on_error, int(num_workers), verbose, bit_depth
                )
        if cache.skipped and on_error == "raise":
            raise _io.ImageReadError(cache.skipped[0], cache.reasons[0])
        _io.report_skipped(cache.skipped, context="decoded cache")
        return cache

    @classmethod
    def _decode_to_memory(
        cls,
        items: Sequence[Any],
        size: int,
        on_error: str,
        num_workers: int,
        verbose: int,
        bit_depth: int | None = None,
    ) -> DecodedCache:
        array, kept, skipped, reasons, kinds = _pool.decode_to_array(
            items, size, on_error, num_workers, verbose, bit_depth
        )
        return cls(array, kept=kept, skipped=skipped, reasons=reasons, kinds=kinds)

    @classmethod
    def _decode_in_background(
        cls,
        items: Sequence[Any],
        ids: Sequence[bytes],
        size: int,
        cache_dir: Path,
        key: str,
        on_error: str,
        num_workers: int,
        verbose: int,
        bit_depth: int | None = None,
    ) -> DecodedCache:
        """A cache that decodes on access until a background process has written each missing shard."""
        layout, files, pending, kinds, proc = _fill.start(items, ids, size, cache_dir, key, bit_depth, num_workers)
        logger.info(
            "decoded cache %s: %d of %d shard(s) are decoded in the background; training need not wait",
            cache_dir,
            len(pending),
            len(layout),
        )
        cache = cls(
            np.empty((0, size, size), np.uint8),
            kept=np.arange(len(items), dtype=np.int64),
            key=key,
            path=_shards.set_index_path(cache_dir, key),
            kinds=dict(kinds),
            shards=files,
            pending=pending,
            bit_depth=bit_depth,
        )
        cache._proc = proc
        return cache

    def finish(self, *, on_failure: str = "raise") -> DecodedCache:
        """Wait for a background fill (see ``wait`` in :meth:`build`); afterwards every shard is on disk.

        Parameters
        ----------
        on_failure : {"raise", "warn"}, default="raise"
            What a failed fill does. Training never depends on the fill (images it has not
            written are decoded on access), so a caller whose work is done passes ``"warn"``:
            the failure is logged and warned about with its reason (the process's last
            words, or the signal that killed it), the cache keeps decoding the missing
            shards on access, and their images' intensity kinds are read from the files.

        Raises
        ------
        RuntimeError
            The fill failed (an unreadable input, or the process died), with
            ``on_failure="raise"``.
        """
        proc = self.__dict__.pop("_proc", None)
        if proc is None:
            return self
        err = proc.communicate()[1]
        if proc.returncode != 0:
            reason = _fill.fill_failure(proc.returncode, err)
            message = f"filling the decoded cache {self.path} failed: {reason}"
            if on_failure == "raise":
                raise RuntimeError(message)
            logger.warning("%s; the images it did not write were decoded on access, nothing is lost", message)
            warnings.warn(
                message + "; the images it did not write were decoded on access", RuntimeWarning, stacklevel=2
            )
            self._count_pending_kinds()
            return self
        done = type(self).open(self.path.parent, self.key)
        self.__dict__.update({k: v for k, v in done.__dict__.items() if k != "_proc"})
        return self

    def _count_pending_kinds(self) -> None:
        """Add the intensity kinds of the images in shards the fill never wrote (read from the files)."""
        for s in list(getattr(self, "_pending", {})):
            if self._open_pending(s):
                continue  # written before the fill died: its kinds are in its metadata
            for kind, n in _fill.kinds_of(self._pending[s][1], self.cache_size, self._bit_depth).items():
                self.kinds[kind] = self.kinds.get(kind, 0) + n

    @classmethod
    def _decode_to_shards(
        cls,
        items: Sequence[Any],
        ids: Sequence[bytes],
        size: int,
        cache_dir: Path,
        key: str,
        on_error: str,
        num_workers: int,
        verbose: int,
        bit_depth: int | None = None,
    ) -> DecodedCache:
        """Decode the shards that are not on disk yet (in parallel), then write the set index."""
        _build.write_missing_shards(items, ids, size, cache_dir, key, on_error, num_workers, verbose, bit_depth)
        return cls.open(cache_dir, key)
