"""CodaIndex (codafeat/index.py): building, searching, the backends agree, saving, refusing other weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codafeat import CodaEncoder
from codafeat.index import CodaIndex

ENC = dict(backbone="test_convnext", image_size=32, random_state=0, device="cpu", num_workers=0)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return CodaEncoder(**ENC).fit()


@pytest.fixture(scope="module")
def archive():
    return images(60)


@pytest.fixture(scope="module")
def index(encoder, archive):
    return CodaIndex(encoder=encoder, backend="exact", chunk_size=16).fit(archive)


def _brute(Z: np.ndarray, V: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The plain reference: every distance, sorted."""
    if metric == "cosine":
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        V = V / np.linalg.norm(V, axis=1, keepdims=True)
        d = 1.0 - Z @ V.T
    else:
        d = np.linalg.norm(Z[:, None, :] - V[None, :, :], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_is_the_brute_force_reference_in_chunks(encoder, archive, metric):
    V = encoder.transform(archive)
    Q = images(7, seed=1)
    index = CodaIndex(encoder=encoder, backend="exact", metric=metric, chunk_size=9).fit(archive)
    res = index.search(Q, k=5)
    d, i = _brute(encoder.transform(Q), V, 5, metric)
    np.testing.assert_array_equal(res.indices, i)
    np.testing.assert_allclose(res.distances, d, rtol=1e-4, atol=1e-5)
    assert res.paths[0] == [f"[{j}]" for j in i[0]]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_flat_gives_the_neighbours_of_the_exact_backend(encoder, archive, metric):
    pytest.importorskip("faiss")
    Q = images(10, seed=2)
    exact = CodaIndex(encoder=encoder, backend="exact", metric=metric).fit(archive).search(Q, k=8)
    flat = CodaIndex(encoder=encoder, backend="faiss", metric=metric).fit(archive).search(Q, k=8)
    np.testing.assert_array_equal(flat.indices, exact.indices)
    np.testing.assert_allclose(flat.distances, exact.distances, rtol=1e-3, atol=1e-3)
    hnsw = CodaIndex(encoder=encoder, backend="faiss-hnsw", metric=metric).fit(archive).search(Q, k=8)
    recall = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(hnsw.indices, exact.indices)])
    assert recall >= 0.9, f"HNSW recall@8 {recall} on 60 vectors"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 24), seed=st.integers(0, 10_000), metric=st.sampled_from(["cosine", "euclidean"]))
def test_every_image_is_its_own_nearest_neighbour_and_a_saved_index_answers_the_same(
    encoder, tmp_path_factory, n, seed, metric
):
    X = images(n, seed)
    index = CodaIndex(encoder=encoder, backend="exact", metric=metric, chunk_size=5).fit(X)
    res = index.search(X, k=1)
    np.testing.assert_array_equal(res.indices[:, 0], np.arange(n))
    folder = index.save(tmp_path_factory.mktemp("idx"))
    again = CodaIndex.load(folder, encoder=encoder).search(X, k=min(3, n))
    ref = index.search(X, k=min(3, n))
    np.testing.assert_array_equal(again.indices, ref.indices)
    np.testing.assert_allclose(again.distances, ref.distances, rtol=1e-5, atol=1e-6)
    assert again.paths == ref.paths


def test_files_keep_their_names_add_appends_and_float16_halves_the_file(encoder, tmp_path):
    from PIL import Image

    folder = tmp_path / "archive"
    folder.mkdir()
    X = images(6, seed=3)
    for i, x in enumerate(X):
        Image.fromarray((x * 255).astype(np.uint8)).save(folder / f"case_{i}.png")
    index = CodaIndex(encoder=encoder, backend="exact", dtype="float16").fit(str(folder))
    assert [p.rsplit("/", 1)[-1] for p in index.paths_] == [f"case_{i}.png" for i in range(6)]
    saved = index.save(tmp_path / "idx")
    assert (saved / "vectors.bin").stat().st_size == 6 * 64 * 2
    loaded = CodaIndex.load(saved)  # its own encoder from encoder.safetensors
    loaded.add(images(2, seed=4))
    assert loaded.n_vectors_ == 8 and loaded.paths_[-2:] == ["[6]", "[7]"]
    assert (saved / "vectors.bin").stat().st_size == 6 * 64 * 2, "the saved index is not changed by add"
    assert loaded.search(str(folder / "case_2.png"), k=1).paths[0][0].endswith("case_2.png")


def test_an_index_refuses_queries_of_other_weights_and_damaged_folders(index, tmp_path):
    folder = index.save(tmp_path / "idx")
    other = CodaEncoder(**dict(ENC, random_state=1)).fit()
    with pytest.raises(ValueError, match="built with other weights or encoder settings"):
        CodaIndex.load(folder, encoder=other)
    with pytest.raises(ValueError, match="built with other weights"):
        CodaIndex.load(folder, encoder=CodaEncoder(**ENC, features="stages").fit())
    (folder / "paths.txt").write_text("only one\n")
    with pytest.raises(ValueError, match="the index is damaged"):
        CodaIndex.load(folder)
    with pytest.raises(ValueError, match="not a complete codafeat index"):
        CodaIndex.load(tmp_path / "nothing")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a codafeat index"):
        index.save(tmp_path / "busy")


def test_bad_queries_and_k_are_refused_clearly(index):
    with pytest.raises(ValueError, match="k must be between 1 and the 60"):
        index.search(images(1), k=61)
    with pytest.raises(ValueError, match="queries have 3 features but the index holds vectors of 64"):
        index.search_embeddings(np.zeros((1, 3)))
    with pytest.raises(TypeError, match="not pickled"):
        import pickle

        pickle.dumps(index)


def test_unreadable_archive_images_are_left_out_and_named(encoder, tmp_path):
    from PIL import Image

    folder = tmp_path / "a"
    folder.mkdir()
    for i, x in enumerate(images(3)):
        Image.fromarray((x * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "3.png").write_bytes(b"not a png")
    skip = CodaEncoder(**ENC, on_error="skip").fit()
    with pytest.warns(UserWarning, match="1 image\\(s\\) could not be read and are not in the index"):
        index = CodaIndex(encoder=skip, backend="exact").fit(str(folder))
    assert index.n_vectors_ == 3 and [s.rsplit("/", 1)[-1] for s in index.skipped_] == ["3.png"]


def test_building_streams_in_chunks_never_holding_more_than_one(encoder, monkeypatch):
    """Memory is bounded by a chunk: the encoder is never asked for more than chunk_size images at once."""
    seen = []
    real = CodaEncoder.embed

    def embed(self, X):
        seen.append(len(X))
        return real(self, X)

    monkeypatch.setattr(CodaEncoder, "embed", embed)
    CodaIndex(encoder=encoder, backend="exact", chunk_size=7).fit(images(30))
    assert seen == [7, 7, 7, 7, 2]


def test_an_add_that_fails_half_way_takes_its_chunks_back(encoder, tmp_path):
    from PIL import Image

    from codafeat.data.io import ImageReadError

    index = CodaIndex(encoder=encoder, backend="exact", chunk_size=2).fit(images(4))
    before = index.search(images(2, seed=9), k=3)
    files = []
    for i, x in enumerate(images(5, seed=5)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray((x * 255).astype(np.uint8)).save(files[-1])
    files[4].write_bytes(b"broken")  # the third chunk fails, after two were appended
    with pytest.raises(ImageReadError):
        index.add([str(f) for f in files])
    assert index.n_vectors_ == 4 and len(index.paths_) == 4
    assert index._vectors.path.stat().st_size == 4 * 64 * 4
    after = index.search(images(2, seed=9), k=3)
    np.testing.assert_array_equal(after.indices, before.indices)
