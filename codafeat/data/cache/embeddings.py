"""A content-addressed on-disk cache of image embeddings.

Cross-validation fits the same pipeline many times on overlapping images, and analyses are
re-run; an encoder with a cache embeds each image once. An embedding is stored under two
keys:

* the **model key** (:func:`model_key`): a hash of the encoder's weights and of the settings
  that change its output (input size, pooling, normalisation);
* the **item key** (:func:`item_key`): a hash of the image's *content* (a file's bytes, an
  array's dtype/shape/bytes, a PIL image's mode/size/bytes), so a copied file hits the cache
  and an edited file misses it, whatever the path.

Layout: ``<location>/<model_key>/<item_key[:2]>/<item_key>.emb``, one small file per
embedding: a magic string, the first 16 bytes of the SHA-256 of the payload, and the
payload, a ``float32`` ``.npy`` array. Entries are written atomically (temporary file +
fsync + rename) so that concurrent writers or a crash never leave a truncated entry, and
the checksum catches a flipped byte on disk. Payloads are read with
``np.load(allow_pickle=False)``: nothing is ever unpickled. An unreadable, corrupt or
mismatched entry counts as a miss (logged, then recomputed and rewritten), never as an
error. (Entries of codafeat 0.1, plain ``.npy`` files without a checksum, are not read.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..._fileio import atomic_write_bytes
from ..io import ImageReadError

logger = logging.getLogger(__name__)

#: Bump when image decoding or preprocessing changes embeddings, to invalidate old entries.
CACHE_VERSION = 1
#: Sub-folder used inside a ``joblib.Memory`` location.
JOBLIB_SUBDIR = "codafeat_embeddings"
_KEY = re.compile(r"^[0-9a-f]{16,128}$")
#: Start of every entry file, then a 16-byte checksum of the payload.
ENTRY_MAGIC = b"codafeat-emb\x01\n"
_DIGEST = 16
ENTRY_SUFFIX = ".emb"
_CHUNK = 1 << 20

__all__ = ["CACHE_VERSION", "EmbeddingCache", "item_key", "model_key"]


# --------------------------------------------------------------------------- keys
def model_key(
    weights: Any,
    *,
    image_size: int,
    pooling: str,
    normalize: bool,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Hash an encoder: its weights plus the settings that change its embeddings.

    Parameters
    ----------
    weights : bytes, Weights or mapping of str to tensor/array
        The weights file bytes, an in-memory :class:`~codafeat.formats.weights.Weights`, or a
        ``state_dict`` (tensors or arrays; hashed by name, dtype, shape and values).
    image_size : int
        Input side.
    pooling : str
        Global pooling.
    normalize : bool
        Whether embeddings are L2-normalised.
    extra : mapping, optional
        Any other JSON-serialisable setting that changes embeddings (e.g. mean/std).

    Returns
    -------
    str
        64 hexadecimal characters (sha256).
    """
    h = hashlib.sha256()
    h.update(b"codafeat-embed-cache\0")
    if isinstance(weights, (bytes, bytearray, memoryview)):
        h.update(b"bytes\0")
        h.update(bytes(weights))
    elif hasattr(weights, "data") and isinstance(weights.data, bytes):
        h.update(b"bytes\0")
        h.update(weights.data)
    elif isinstance(weights, Mapping):
        h.update(b"state\0")
        for name in sorted(weights):
            arr = _as_numpy(weights[name])
            h.update(name.encode() + b"\0" + _array_header(arr))
            h.update(np.ascontiguousarray(arr).view(np.uint8).tobytes())
    else:
        raise TypeError(
            f"weights must be bytes, a codafeat Weights object or a state_dict mapping, got {type(weights).__name__}"
        )
    settings = {
        "cache_version": CACHE_VERSION,
        "image_size": int(image_size),
        "pooling": str(pooling),
        "normalize": bool(normalize),
        "extra": dict(extra or {}),
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(value)


def _array_header(arr: np.ndarray) -> bytes:
    return f"{arr.dtype.str}|{arr.shape}".encode() + b"\0"


def item_key(item: Any) -> str:
    """Hash one image by content.

    * a file path: sha256 of the file's bytes (the path itself is not part of the key);
    * an ndarray: its dtype, shape and values;
    * a PIL image: its mode, size and pixel bytes.

    Returns
    -------
    str
        64 hexadecimal characters.

    Raises
    ------
    ImageReadError
        If a path is not a readable file.
    TypeError
        For any other kind of item.
    """
    h = hashlib.sha256()
    if isinstance(item, (str, os.PathLike)):
        h.update(b"file\0")
        try:
            with open(item, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ImageReadError(item, "no such file") from exc
        except OSError as exc:
            raise ImageReadError(item, f"cannot read file ({exc})") from exc
    elif isinstance(item, np.ndarray):
        h.update(b"array\0" + _array_header(item))
        h.update(np.ascontiguousarray(item).view(np.uint8).tobytes() if item.size else b"")
    elif isinstance(item, Image.Image):
        h.update(f"pil\0{item.mode}|{item.size}\0".encode())
        h.update(item.tobytes())
        if item.mode == "P":
            h.update(bytes(item.getpalette() or []))
    else:
        raise TypeError(f"cannot key an image of type {type(item).__name__} (expected a path, ndarray or PIL image)")
    return h.hexdigest()


def _check_key(key: str, what: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"{what} must be 16-128 lowercase hexadecimal characters, got {key!r}")
    return key


# --------------------------------------------------------------------------- cache
class EmbeddingCache:
    """Embeddings on disk, keyed by model and image content.

    Parameters
    ----------
    location : str, path or joblib.Memory
        A directory (created when first written), or a :class:`joblib.Memory` whose
        ``location`` directory is used (entries go to its ``codafeat_embeddings``
        sub-folder). ``joblib.Memory(None)`` disables caching: every lookup misses and
        nothing is stored.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from codafeat.data.cache.embeddings import EmbeddingCache, item_key, model_key
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> mk = model_key(b"weights", image_size=224, pooling="avg", normalize=True)
    >>> keys = [item_key(np.zeros((4, 4), np.uint8)), item_key(np.ones((4, 4), np.uint8))]
    >>> cache.store(mk, keys[:1], np.array([[1.0, 2.0]]))
    1
    >>> emb, missing = cache.lookup(mk, keys)
    >>> emb.tolist(), missing.tolist()
    ([[1.0, 2.0], [nan, nan]], [1])
    """

    model_key = staticmethod(model_key)
    item_key = staticmethod(item_key)

    def __init__(self, location: str | os.PathLike | Any) -> None:
        if isinstance(location, (str, os.PathLike)):
            self.root: Path | None = Path(location).expanduser()
        elif hasattr(location, "location") and hasattr(location, "cache"):  # joblib.Memory
            loc = location.location
            self.root = None if loc is None else Path(loc) / JOBLIB_SUBDIR
        else:
            raise TypeError(
                f"cache location must be a directory path or a joblib.Memory, got {type(location).__name__}"
            )
        if self.root is not None and self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"cache location {str(self.root)!r} exists and is not a directory")

    @property
    def enabled(self) -> bool:
        """False for ``joblib.Memory(None)``."""
        return self.root is not None

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root) if self.root else None!r})"

    def path(self, model_key: str, item_key: str) -> Path:
        """The file of one entry (which may not exist)."""
        if self.root is None:
            raise ValueError("this cache is disabled (joblib.Memory(None)) and has no files")
        _check_key(model_key, "model_key")
        _check_key(item_key, "item_key")
        return self.root / model_key / item_key[:2] / f"{item_key}{ENTRY_SUFFIX}"

    def lookup(
        self, model_key: str, item_keys: Sequence[str], *, n_features: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read the cached embeddings of ``item_keys``.

        Parameters
        ----------
        model_key : str
            From :func:`model_key`.
        item_keys : sequence of str
            From :func:`item_key`.
        n_features : int, optional
            Expected embedding size; entries of another size count as misses. ``None``:
            the size of the first entry found.

        Returns
        -------
        embeddings : ndarray of shape (n_items, n_features), float32
            Cached rows; rows of misses are NaN. With no hit and no ``n_features`` the
            shape is ``(n_items, 0)``.
        missing : ndarray of int
            Indices of the misses, in order.
        """
        keys = list(item_keys)
        rows: list[np.ndarray | None] = [None] * len(keys)
        dim = n_features
        if self.root is not None:
            _check_key(model_key, "model_key")
            for i, key in enumerate(keys):
                vec = self._read(self.path(model_key, key))
                if vec is None:
                    continue
                if dim is None:
                    dim = vec.shape[0]
                if vec.shape[0] != dim:
                    logger.warning(
                        "embedding cache entry %s has %d features, expected %d: treated as a miss",
                        self.path(model_key, key),
                        vec.shape[0],
                        dim,
                    )
                    continue
                rows[i] = vec
        out = np.full((len(keys), dim or 0), np.nan, dtype=np.float32)
        for i, vec in enumerate(rows):
            if vec is not None:
                out[i] = vec
        missing = np.array([i for i, v in enumerate(rows) if v is None], dtype=np.intp)
        logger.debug("embedding cache: %d hit(s), %d miss(es)", len(keys) - len(missing), len(missing))
        return out, missing

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            vec = np.load(io.BytesIO(_entry_payload(path.read_bytes())), allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("unreadable embedding cache entry %s (%s): treated as a miss", path, exc)
            return None
        if vec.ndim != 1 or vec.dtype.kind != "f" or not np.all(np.isfinite(vec)):
            logger.warning("malformed embedding cache entry %s: treated as a miss", path)
            return None
        return vec.astype(np.float32, copy=False)

    def store(self, model_key: str, item_keys: Sequence[str], embeddings: Any) -> int:
        """Write embeddings (one row per key), atomically per entry.

        Rows with NaN or infinite values (e.g. skipped images) are not stored; they are
        counted in the log.

        Returns
        -------
        int
            The number of entries written.
        """
        keys = list(item_keys)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(keys):
            raise ValueError(
                f"embeddings must have shape ({len(keys)}, n_features) for {len(keys)} item keys, got {emb.shape}"
            )
        if self.root is None:
            return 0
        _check_key(model_key, "model_key")
        written = 0
        bad = 0
        for key, row in zip(keys, emb):
            if not np.all(np.isfinite(row)):
                bad += 1
                continue
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(row), allow_pickle=False)
            atomic_write_bytes(self.path(model_key, key), entry_bytes(buf.getvalue()))
            written += 1
        if bad:
            logger.info("embedding cache: %d non-finite row(s) not stored", bad)
        return written

    def clear(self, model_key: str | None = None) -> None:
        """Delete the entries of one model (or all entries)."""
        if self.root is None or not self.root.exists():
            return
        import shutil

        if model_key is None:
            for child in self.root.iterdir():
                if child.is_dir() and _KEY.match(child.name):
                    shutil.rmtree(child)
        else:
            target = self.root / _check_key(model_key, "model_key")
            if target.exists():
                shutil.rmtree(target)


def entry_bytes(payload: bytes) -> bytes:
    """An entry file's content: :data:`ENTRY_MAGIC`, the payload's checksum, the payload."""
    return ENTRY_MAGIC + hashlib.sha256(payload).digest()[:_DIGEST] + payload


def _entry_payload(data: bytes) -> bytes:
    """The payload of an entry file; ``ValueError`` when its magic or checksum is wrong."""
    head = len(ENTRY_MAGIC) + _DIGEST
    if len(data) < head or not data.startswith(ENTRY_MAGIC):
        raise ValueError("not a codafeat embedding entry")
    payload = data[head:]
    if hashlib.sha256(payload).digest()[:_DIGEST] != data[len(ENTRY_MAGIC) : head]:
        raise ValueError("checksum mismatch (corrupt on disk)")
    return payload
