"""CodaIndex at archive scale (issue 28): exact numpy scan against FAISS flat and FAISS HNSW.

    python benchmarks/index_scale.py                          # 10k and 100k synthetic vectors, 320-d
    python benchmarks/index_scale.py --folder ../shared/data/organs7 --weights coda.safetensors
    python benchmarks/index_scale.py --dry-run                # 2k vectors (tested in CI)

For each size N, synthetic unit vectors (clustered on a low-dimensional set, like embeddings) are
written into an index through the same path ``CodaIndex.fit`` uses (chunked appends to the
memory-mapped file), then each backend answers ``--queries`` queries with k = 10. Each
(backend, N) runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own:
the build (the vector file, and FAISS's own copy or graph) and the queries, above what the process
held once torch and FAISS were imported. Reported per run:
build seconds (file written and, for FAISS, the index built), query milliseconds per image,
peak RSS in MB, and recall@10 against the exact scan of the same run (1.0 for exact
backends). With ``--folder``, the same is measured on real radiographs embedded with the
given weights (the embedding time reported apart). Figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("exact", "faiss", "faiss-hnsw")


def clustered_chunks(n: int, dim: int, seed: int, chunk: int = 4096, latent: int = 24):
    """Unit vectors like embeddings, ``chunk`` rows at a time (the whole set is never in memory).

    Embeddings of radiographs lie near a low-dimensional set, clustered by organ: points of a
    ``latent``-dimensional mixture of 16 clusters, mapped into ``dim`` dimensions by one fixed
    random linear map, plus a little isotropic noise, then normalised. (Isotropic noise in all
    ``dim`` dimensions would make every pair of points nearly equidistant, which no real encoder
    gives and no approximate index is built for.)
    """
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(12345)  # the same clusters and map for the archive and the queries
    centres = fixed.standard_normal((16, latent)).astype(np.float32) * 2.0
    lift = fixed.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z = centres[rng.integers(0, 16, m)] + rng.standard_normal((m, latent)).astype(np.float32)
        v = z @ lift + 0.05 * rng.standard_normal((m, dim)).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _FixedEncoder:
    """Stands in for a CodaEncoder: the benchmark measures the index, not the network."""

    normalize, batch_size = True, 32

    def __init__(self, dim: int) -> None:
        self._n_features_out = dim

    def cache_key(self) -> str:
        return "synthetic"


def one_run(backend: str, n: int, dim: int, queries: int, seed: int) -> dict:
    """Build an index of ``n`` synthetic vectors and query it with one backend (this process only)."""
    import tempfile as tf

    from codafeat.index import CodaIndex, _VectorFile  # imports torch before the baseline memory is read

    if backend != "exact":
        import faiss  # noqa: F401  (its import is not the index's memory either)

    Q = np.concatenate(list(clustered_chunks(queries, dim, seed + 1)))
    index = CodaIndex(backend=backend)
    before = _rss_mb()  # torch, numpy, FAISS imported: the process before the index
    t = time.perf_counter()
    spill = Path(tf.mkdtemp(prefix="bench-index-"))
    index._vectors = _VectorFile(spill / "vectors.bin", dim, "float32")
    for chunk in clustered_chunks(n, dim, seed):  # the chunked appends of CodaIndex.fit
        index._vectors.append(chunk)
    index.encoder_, index.encoder_key_ = _FixedEncoder(dim), "synthetic"
    index.paths_, index.skipped_, index.n_vectors_, index._search_index = [str(i) for i in range(n)], [], n, None
    if backend != "exact":
        index.search_embeddings(Q[:1], k=10)  # builds the FAISS index
    build = time.perf_counter() - t
    t = time.perf_counter()
    res = index.search_embeddings(Q, k=10)
    query_ms = 1000 * (time.perf_counter() - t) / queries
    rss = _rss_mb() - before
    return dict(backend=backend, n=n, build_s=build, query_ms=query_ms, rss_mb=rss, indices=res.indices.tolist())


def run_child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def folder_runs(folder: str, weights: str, queries: int) -> list[dict]:
    """Embed a real folder once (CodaIndex.fit), then search it with each backend."""
    from codafeat import CodaEncoder
    from codafeat.index import CodaIndex

    enc = CodaEncoder(weights=weights, num_workers=0, device="cpu").fit()
    t = time.perf_counter()
    base = CodaIndex(encoder=enc, backend="exact").fit(folder)
    embed_s = time.perf_counter() - t
    tmp = Path(tempfile.mkdtemp(prefix="bench-folder-"))
    base.save(tmp / "idx")
    rng = np.random.default_rng(0)
    picks = rng.choice(base.n_vectors_, min(queries, base.n_vectors_), replace=False)
    Q = np.asarray(base._vectors.view()[np.sort(picks)], dtype=np.float32)
    rows = []
    for backend in BACKENDS:
        index = CodaIndex.load(tmp / "idx", encoder=enc, backend=backend)
        t = time.perf_counter()
        index.search_embeddings(Q[:1], k=10)
        build = time.perf_counter() - t
        t = time.perf_counter()
        res = index.search_embeddings(Q, k=10)
        rows.append(
            dict(
                backend=backend,
                n=base.n_vectors_,
                build_s=build,
                query_ms=1000 * (time.perf_counter() - t) / len(Q),
                indices=res.indices.tolist(),
                embed_s=embed_s,
            )
        )
    truth = rows[0]["indices"]
    for r in rows:
        r["recall"] = recall(r.pop("indices"), truth)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=320, help="vector size (convnext_atto: 320)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--folder", default=None, help="also index this folder of real images")
    p.add_argument("--weights", default=None, help="weights for --folder")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(one_run(a.backend, a.sizes[0], a.dim, a.queries, 0)))
        return 0
    if a.dry_run:
        a.sizes, a.queries = [2000], 20
    try:
        import faiss  # noqa: F401

        backends = BACKENDS
    except ImportError:
        backends = ("exact",)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(
        "| N | backend | build s | query ms / image | peak RSS above the process MB | recall@10 | query time vs exact |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in a.sizes:
        runs = {
            b: run_child(["--backend", b, "--sizes", str(n), "--dim", str(a.dim), "--queries", str(a.queries)])
            for b in backends
        }
        truth = runs["exact"]["indices"]
        for b, r in runs.items():
            ratio = r["query_ms"] / runs["exact"]["query_ms"]
            print(
                f"| {n} | {b} | {r['build_s']:.2f} | {r['query_ms']:.3f} | {r['rss_mb']:.0f} | "
                f"{recall(r['indices'], truth):.3f} | {ratio:.3f} |"
            )
    if a.folder:
        if not a.weights:
            raise SystemExit("--folder needs --weights")
        rows = folder_runs(a.folder, a.weights, a.queries)
        print(f"\nReal folder {a.folder}: {rows[0]['n']} images embedded and indexed in {rows[0]['embed_s']:.1f} s")
        print("| backend | build s | query ms / image | recall@10 |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['backend']} | {r['build_s']:.3f} | {r['query_ms']:.3f} | {r['recall']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
