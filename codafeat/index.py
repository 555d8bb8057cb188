"""Similar-case search over an archive of radiographs: :class:`CodaIndex`.

An index holds one embedding per archived image (from a :class:`~codafeat.CodaEncoder`),
the image's name, and the identity of the encoder's weights. Its vectors live in a file,
memory-mapped, so that building an index of a large folder keeps memory flat: images are
embedded in chunks and each chunk is appended to the file. ``search`` embeds the query
images with the same encoder and returns the nearest archived images.

Backends: ``"exact"`` is a brute-force scan of the memory-mapped vectors in chunks (numpy;
memory bounded by a chunk); ``"faiss"`` is FAISS's flat index (exact, in memory, faster),
``"faiss-hnsw"`` its HNSW graph (approximate, for archives where a flat scan is too slow;
see ``benchmarks/index_scale.py`` for the sizes and recall measured). FAISS comes with the
``index`` extra (``pip install "codafeat[index]"``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._estimator.persist import atomic_fit
from ._fileio import atomic_open, atomic_write_bytes
from .data.io import as_image_list
from .encoder import CodaEncoder

logger = logging.getLogger(__name__)

__all__ = ["CodaIndex", "SearchResult"]

#: Version of the on-disk layout (``index.json``, ``vectors.bin``, ``paths.txt``, ``encoder.safetensors``).
INDEX_FORMAT = 1
BACKENDS = ("auto", "exact", "faiss", "faiss-hnsw")
METRICS = ("cosine", "euclidean")
#: ``backend="auto"`` takes FAISS's HNSW graph from this many vectors on (when FAISS is
#: installed): below it a flat scan answers a query in milliseconds (benchmarks/index_scale.py).
HNSW_FROM = 1_000_000
#: Images embedded (and vectors scanned) per chunk: what bounds memory while building and searching.
CHUNK = 4096


class SearchResult(NamedTuple):
    """What :meth:`CodaIndex.search` returns, one row per query (nearest first)."""

    #: ``(n_queries, k)``: cosine distance (1 - cosine similarity) or Euclidean distance.
    distances: np.ndarray
    #: ``(n_queries, k)``: positions of the neighbours in the index.
    indices: np.ndarray
    #: The neighbours' names (file paths as given, or ``"[i]"`` for in-memory images).
    paths: list[list[str]]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError('the FAISS backends need faiss-cpu: pip install "codafeat[index]"') from exc
    return faiss


def _names(items: Sequence[Any], offset: int) -> list[str]:
    names = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"[{offset + i}]" for i, p in enumerate(items)]
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"{len(bad)} image name(s) contain a line break (e.g. {bad[0]!r}); rename them to index them")
    return names


class _VectorFile:
    """Float vectors appended to a raw file and read back memory-mapped (one writer, many readers)."""

    def __init__(self, path: Path, dim: int, dtype: str, n: int = 0) -> None:
        self.path, self.dim, self.dtype, self.n = path, int(dim), np.dtype(dtype), int(n)

    def append(self, rows: np.ndarray) -> None:
        with open(self.path, "ab") as fh:
            fh.write(np.ascontiguousarray(rows, dtype=self.dtype.newbyteorder("<")).tobytes())
        self.n += len(rows)

    def view(self) -> np.ndarray:
        if self.n == 0:
            return np.zeros((0, self.dim), self.dtype)
        return np.memmap(self.path, dtype=self.dtype.newbyteorder("<"), mode="r", shape=(self.n, self.dim))


class CodaIndex(BaseEstimator):
    """Find the archived radiographs most like a query, with a Coda encoder's embeddings.

    Parameters
    ----------
    encoder : CodaEncoder or None, default=None
        The encoder of the archive and the queries (an unfitted one is fitted). ``None``:
        a randomly initialised ``CodaEncoder()`` (a baseline; give your weights).
    metric : {"cosine", "euclidean"}, default="cosine"
        Distance between embeddings. Cosine vectors are stored L2-normalised.
    backend : {"auto", "exact", "faiss", "faiss-hnsw"}, default="auto"
        ``"exact"``: numpy scan of the memory-mapped vectors; ``"faiss"``: FAISS's flat
        index (exact, held in memory); ``"faiss-hnsw"``: FAISS's HNSW graph (approximate).
        ``"auto"``: FAISS when installed (HNSW from :data:`HNSW_FROM` vectors), else exact.
    dtype : {"float32", "float16"}, default="float32"
        How the vectors are stored on disk (float16 halves the file; searching is in float32).
    chunk_size : int, default=4096
        Images embedded, and vectors scanned, per step: what bounds memory.
    verbose : int, default=0
        ``>= 1`` logs progress per chunk.

    Attributes
    ----------
    n_vectors_ : int
        Images in the index.
    paths_ : list of str
        Their names, in index order.
    encoder_ : CodaEncoder
        The fitted encoder.
    encoder_key_ : str
        The identity of the encoder's weights and settings (its embedding-cache key); a
        saved index refuses queries embedded with another.
    skipped_ : list of str
        Images that could not be read (with the encoder's ``on_error="skip"``), left out.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat import CodaEncoder
    >>> from codafeat.index import CodaIndex
    >>> rng = np.random.default_rng(0)
    >>> archive = rng.uniform(0, 1, (20, 32, 32)).astype(np.float32)
    >>> enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, device="cpu")
    >>> index = CodaIndex(encoder=enc, backend="exact").fit(archive)
    >>> result = index.search(archive[[3, 7]], k=2)
    >>> result.indices[:, 0].tolist(), result.paths[0][0]
    ([3, 7], '[3]')
    """

    _parameter_constraints: dict = {
        "encoder": [None, HasMethods(["fit", "embed", "cache_key"])],
        "metric": [StrOptions(set(METRICS))],
        "backend": [StrOptions(set(BACKENDS))],
        "dtype": [StrOptions({"float32", "float16"})],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        encoder: CodaEncoder | None = None,
        metric: str = "cosine",
        backend: str = "auto",
        dtype: str = "float32",
        chunk_size: int = CHUNK,
        verbose: int = 0,
    ) -> None:
        self.encoder = encoder
        self.metric = metric
        self.backend = backend
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.verbose = verbose

    # ------------------------------------------------------------------ building
    @atomic_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> CodaIndex:
        """Embed the images ``X`` (a folder, files, arrays: what ``CodaEncoder`` reads) into a new index.

        Returns
        -------
        self : CodaIndex
        """
        from sklearn.base import clone

        enc = self.encoder if self.encoder is not None else CodaEncoder()
        if getattr(enc, "normalize", None) == "standard":
            raise ValueError(
                "CodaIndex needs an encoder with normalize='l2' or None: a 'standard' encoder's statistics belong "
                "to the images it was fitted on, and a saved index could not rebuild them"
            )
        self.encoder_ = enc if hasattr(enc, "model_") else clone(enc).fit()
        self.encoder_key_ = self.encoder_.cache_key()
        self._spill = Path(tempfile.mkdtemp(prefix="codafeat-index-"))
        weakref.finalize(self, shutil.rmtree, str(self._spill), True)
        self._vectors = _VectorFile(self._spill / "vectors.bin", self.encoder_._n_features_out, self.dtype)
        self.paths_, self.skipped_ = [], []
        self._search_index = None
        self._append(X)
        return self

    def add(self, X: Any) -> CodaIndex:
        """Embed more images and append them to the index (positions continue after the last)."""
        check_is_fitted(self, "encoder_")
        if getattr(self, "_readonly", False):  # a loaded index: continue in a private copy
            spill = Path(tempfile.mkdtemp(prefix="codafeat-index-"))
            weakref.finalize(self, shutil.rmtree, str(spill), True)
            shutil.copyfile(self._vectors.path, spill / "vectors.bin")
            self._vectors = _VectorFile(spill / "vectors.bin", self._vectors.dim, self._vectors.dtype, self._vectors.n)
            self._readonly = False
        self._append(X)
        return self

    def _append(self, X: Any) -> None:
        """Embed ``X`` chunk by chunk and append; a failure (or Ctrl-C) takes every chunk of this call back."""
        n_before, paths, skipped = self._vectors.n, list(self.paths_), list(self.skipped_)
        try:
            self._append_chunks(X)
        except BaseException:
            if self._vectors.path.exists():
                with open(self._vectors.path, "r+b") as fh:
                    fh.truncate(n_before * self._vectors.dim * self._vectors.dtype.itemsize)
            self._vectors.n, self.paths_, self.skipped_ = n_before, paths, skipped
            self.n_vectors_ = n_before
            raise

    def _append_chunks(self, X: Any) -> None:
        items = as_image_list(X)
        n0 = len(self.paths_)
        for start in range(0, len(items), int(self.chunk_size)):
            chunk = items[start : start + int(self.chunk_size)]
            names = _names(chunk, n0 + start)
            result = self.encoder_.embed(chunk)
            Z = np.asarray(result.embeddings, dtype=np.float32)
            ok = ~np.isnan(Z).any(axis=1)
            if self.metric == "cosine":
                Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
            self._vectors.append(Z[ok])
            self.paths_ += [n for n, keep in zip(names, ok) if keep]
            self.skipped_ += [n for n, keep in zip(names, ok) if not keep]
            if self.verbose:
                logger.info("indexed %d of %d image(s)", min(start + len(chunk), len(items)), len(items))
        if self.skipped_:
            warnings.warn(
                f"CodaIndex: {len(self.skipped_)} image(s) could not be read and are not in the index "
                f"(e.g. {self.skipped_[:3]}); skipped_ lists them",
                UserWarning,
                stacklevel=3,
            )
        self.n_vectors_ = self._vectors.n
        self._search_index = None  # rebuilt on the next search

    # ------------------------------------------------------------------ searching
    def search(self, X: Any, k: int = 10) -> SearchResult:
        """The ``k`` archived images nearest to each query image ``X``, nearest first."""
        check_is_fitted(self, "encoder_")
        Z = np.asarray(self.encoder_.transform(X), dtype=np.float32)
        if np.isnan(Z).any():
            raise ValueError("a query image could not be read; queries must all be readable")
        return self.search_embeddings(Z, k)

    def search_embeddings(self, Z: Any, k: int = 10) -> SearchResult:
        """:meth:`search` for queries already embedded with this index's encoder, ``(n, n_features)``."""
        check_is_fitted(self, "encoder_")
        Z = np.atleast_2d(np.asarray(Z, dtype=np.float32))
        if Z.shape[1] != self._vectors.dim:
            raise ValueError(f"queries have {Z.shape[1]} features but the index holds vectors of {self._vectors.dim}")
        if not 1 <= int(k) <= self.n_vectors_:
            raise ValueError(f"k must be between 1 and the {self.n_vectors_} image(s) in the index, got {k}")
        if self.metric == "cosine":
            Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        backend = self.backend_
        if backend == "exact":
            dist, idx = self._exact(Z, int(k))
        else:
            dist, idx = self._faiss_search(Z, int(k), backend)
        return SearchResult(dist, idx, [[self.paths_[j] for j in row] for row in idx])

    @property
    def backend_(self) -> str:
        """The backend searches use (``backend`` with ``"auto"`` decided)."""
        if self.backend != "auto":
            return self.backend
        try:
            _faiss()
        except ImportError:
            return "exact"
        return "faiss-hnsw" if getattr(self, "n_vectors_", 0) >= HNSW_FROM else "faiss"

    def _exact(self, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the memory-mapped vectors, ``chunk_size`` rows at a time, keeping the best ``k``."""
        V = self._vectors.view()
        best_d = np.full((len(Z), 0), np.inf, np.float32)
        best_i = np.zeros((len(Z), 0), np.int64)
        q2 = (Z * Z).sum(1, keepdims=True)
        for start in range(0, len(V), int(self.chunk_size)):
            chunk = np.asarray(V[start : start + int(self.chunk_size)], dtype=np.float32)
            dots = Z @ chunk.T
            if self.metric == "cosine":
                d = 1.0 - dots
            else:
                d = np.sqrt(np.maximum(q2 + (chunk * chunk).sum(1)[None, :] - 2.0 * dots, 0.0))
            d_all = np.concatenate([best_d, d], axis=1)
            i_all = np.concatenate([best_i, np.arange(start, start + len(chunk))[None, :].repeat(len(Z), 0)], axis=1)
            keep = np.argsort(d_all, axis=1, kind="stable")[:, :k]
            best_d, best_i = np.take_along_axis(d_all, keep, 1), np.take_along_axis(i_all, keep, 1)
        return best_d.astype(np.float32), best_i

    def _faiss_search(self, Z: np.ndarray, k: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if self._search_index is None:
            dim = self._vectors.dim
            ip = self.metric == "cosine"
            if backend == "faiss":
                index = faiss.IndexFlatIP(dim) if ip else faiss.IndexFlatL2(dim)
            else:
                index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
                index.hnsw.efSearch = 128
            V = self._vectors.view()
            for start in range(0, len(V), int(self.chunk_size)):
                index.add(np.ascontiguousarray(V[start : start + int(self.chunk_size)], dtype=np.float32))
            self._search_index = index
        scores, idx = self._search_index.search(np.ascontiguousarray(Z), k)
        dist = 1.0 - scores if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0.0))
        return dist.astype(np.float32), idx.astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index to ``folder``: ``vectors.bin`` (raw little-endian vectors), ``paths.txt``,
        ``encoder.safetensors`` (the encoder's weights) and ``index.json`` (layout and identity).

        Each file is written atomically; ``index.json`` last, so a folder with it is complete.
        An existing index in ``folder`` is replaced; a folder holding other files is refused.
        """
        check_is_fitted(self, "encoder_")
        folder = Path(folder)
        ours = {"index.json", "vectors.bin", "paths.txt", "encoder.safetensors"}
        if folder.is_dir() and any(p.name not in ours and not p.name.startswith(".") for p in folder.iterdir()):
            raise FileExistsError(f"{str(folder)!r} holds files that are not a codafeat index; choose an empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.json").unlink(missing_ok=True)  # the folder is incomplete until the end
        with atomic_open(folder / "vectors.bin") as fh, open(self._vectors.path, "rb") as src:
            shutil.copyfileobj(src, fh, 16 << 20)
        atomic_write_bytes(
            folder / "paths.txt", "".join(f"{p}\n" for p in self.paths_).encode("utf-8", "surrogateescape")
        )
        self.encoder_.save(folder / "encoder.safetensors")
        meta = {
            "format": INDEX_FORMAT,
            "n_vectors": int(self.n_vectors_),
            "dim": int(self._vectors.dim),
            "dtype": self.dtype,
            "metric": self.metric,
            "backend": self.backend,
            "encoder_key": self.encoder_key_,
            "encoder_params": {"normalize": self.encoder_.normalize, "batch_size": int(self.encoder_.batch_size)},
        }
        atomic_write_bytes(folder / "index.json", json.dumps(meta, indent=1).encode())
        return folder

    @classmethod
    def load(
        cls, folder: str | os.PathLike, *, encoder: CodaEncoder | None = None, device: str = "auto", **params: Any
    ) -> CodaIndex:
        """An index saved by :meth:`save`, its vectors memory-mapped (read-only; :meth:`add` copies them).

        ``encoder`` (optional) must be the encoder the index was built with (its weights and
        settings); without it, the saved ``encoder.safetensors`` is used, on ``device``.
        ``params`` override ``backend``, ``chunk_size`` and ``verbose``.

        Raises
        ------
        ValueError
            The folder is not a complete codafeat index, or ``encoder`` differs from the index's.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{str(folder)!r} is not a complete codafeat index (index.json: {exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(
                f"{str(folder)!r}: index format {meta.get('format')!r}, this codafeat reads {INDEX_FORMAT}"
            )
        if encoder is None:
            encoder = CodaEncoder(weights=str(folder / "encoder.safetensors"), device=device, **meta["encoder_params"])
        enc = encoder if hasattr(encoder, "model_") else encoder.fit()
        if enc.cache_key() != meta["encoder_key"]:
            raise ValueError(
                f"{str(folder)!r} was built with other weights or encoder settings than the encoder given: its "
                "vectors and the queries' embeddings would not be comparable. Use the index's own encoder "
                "(CodaIndex.load without encoder=) or rebuild the index"
            )
        paths = (folder / "paths.txt").read_bytes().decode("utf-8", "surrogateescape").splitlines()
        vectors = _VectorFile(folder / "vectors.bin", meta["dim"], meta["dtype"], meta["n_vectors"])
        expected = vectors.n * vectors.dim * vectors.dtype.itemsize
        if len(paths) != vectors.n or vectors.path.stat().st_size != expected:
            raise ValueError(
                f"{str(folder)!r}: index.json says {vectors.n} vectors, but paths.txt has {len(paths)} lines and "
                f"vectors.bin {vectors.path.stat().st_size} bytes ({expected} expected): the index is damaged"
            )
        index = cls(
            encoder=encoder,
            metric=meta["metric"],
            backend=params.pop("backend", meta["backend"]),
            dtype=meta["dtype"],
            **params,
        )
        index.encoder_, index.encoder_key_, index.paths_, index.skipped_ = enc, meta["encoder_key"], paths, []
        index._vectors, index._readonly, index._search_index = vectors, True, None
        index.n_vectors_ = vectors.n
        return index

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a CodaIndex is not pickled: save(folder) it and CodaIndex.load(folder)")
