"""CodaEncoder(cache=...): each image is embedded once across folds and runs (issue 5, item 3).

Forward passes are counted with a hook on the backbone, so the tests fail if the cache
is bypassed, and the cached embeddings are compared with uncached ones.
"""

from __future__ import annotations

import pickle
import shutil

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from codafeat import CodaEncoder
from codafeat.data.cache.embeddings import EmbeddingCache

TINY = dict(backbone="test_convnext", image_size=32, batch_size=4, num_workers=0, random_state=0)


class ForwardCounter:
    """Counts images that go through an encoder's backbone."""

    def __init__(self) -> None:
        self.images = 0
        self.calls = 0

    def attach(self, enc: CodaEncoder) -> ForwardCounter:
        def hook(module, args, output):
            self.calls += 1
            self.images += int(args[0].shape[0])

        enc.model_.backbone.register_forward_hook(hook)
        return self


def _counted(enc: CodaEncoder) -> ForwardCounter:
    return ForwardCounter().attach(enc)


def test_second_transform_embeds_nothing_and_matches(make_image_folder, tmp_path):
    folder = make_image_folder(n=6, size=(40, 36))
    reference = CodaEncoder(**TINY).fit().transform(folder)
    enc = CodaEncoder(**TINY, cache=tmp_path / "cache").fit()
    count = _counted(enc)
    first, _, hits, misses = enc.embed(folder)
    assert count.images == 6 and (hits, misses) == (0, 6)
    second, _, hits, misses = enc.embed(folder)
    assert count.images == 6, "cached images went through the model again"
    assert (hits, misses) == (6, 0)
    np.testing.assert_allclose(first, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(second, first)


def test_cross_validation_embeds_each_image_once(tmp_path, monkeypatch):
    embedded = []
    original = CodaEncoder._embed

    def counting_embed(self, items):  # every image that reaches the model, across clones
        embedded.append(len(items))
        return original(self, items)

    monkeypatch.setattr(CodaEncoder, "_embed", counting_embed)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(24, 36, 36), dtype=np.uint8)
    X[12:, 10:26, 10:26] = 255  # two classes the model can separate
    y = np.repeat([0, 1], 12)
    enc = CodaEncoder(**TINY, cache=joblib.Memory(tmp_path / "joblib"))
    pipe = make_pipeline(enc, LogisticRegression(max_iter=500))
    # cross_val_score clones the pipeline per fold: count through the cache's files instead
    scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(4, shuffle=True, random_state=0), n_jobs=1)
    assert scores.shape == (4,)
    assert sum(embedded) == len(X), "4 folds x (train + test) must embed each of the 24 images once"
    files = list((tmp_path / "joblib").rglob("*.emb"))
    assert len(files) == len(X), "each distinct image must be stored exactly once"
    # a further run over the same images: no forward pass at all
    fitted = CodaEncoder(**TINY, cache=joblib.Memory(tmp_path / "joblib")).fit()
    count = _counted(fitted)
    fitted.transform(X)
    assert count.calls == 0


def test_partial_hits_embed_only_new_images_in_input_order(make_image_folder, tmp_path):
    folder = make_image_folder(n=5)
    paths = sorted(folder.iterdir())
    enc = CodaEncoder(**TINY, cache=tmp_path / "c").fit()
    full = CodaEncoder(**TINY).fit().transform(paths)
    enc.transform(paths[1:4])
    count = _counted(enc)
    out = enc.transform(paths[::-1])
    assert count.images == 2  # paths[0] and paths[4]
    np.testing.assert_allclose(out, full[::-1], rtol=1e-5, atol=1e-6)


def test_key_is_content_not_path(make_image_folder, tmp_path):
    folder = make_image_folder(n=2)
    a, b = sorted(folder.iterdir())
    enc = CodaEncoder(**TINY, cache=tmp_path / "c").fit()
    enc.transform([a])
    copy = tmp_path / "renamed.png"
    shutil.copy(a, copy)
    count = _counted(enc)
    enc.transform([copy])
    assert count.images == 0, "a copied file must hit the cache"
    shutil.copy(b, copy)  # same path, new content
    out = enc.transform([copy])
    assert count.images == 1, "an edited file must miss the cache"
    np.testing.assert_allclose(out, CodaEncoder(**TINY).fit().transform([b]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "change",
    [dict(random_state=1), dict(normalize="l2"), dict(image_size=40), dict(pooling="max")],
    ids=["weights", "normalize", "image_size", "pooling"],
)
def test_settings_that_change_embeddings_change_the_key(tmp_path, change):
    X = np.random.default_rng(0).integers(0, 256, size=(3, 40, 40), dtype=np.uint8)
    cache = tmp_path / "c"
    base = CodaEncoder(**TINY, cache=cache).fit()
    base.transform(X)
    other = CodaEncoder(**{**TINY, **change}, cache=cache).fit()
    assert other.cache_key() != base.cache_key()
    count = _counted(other)
    out = other.transform(X)
    assert count.images == 3
    np.testing.assert_allclose(out, CodaEncoder(**{**TINY, **change}).fit().transform(X), rtol=1e-5, atol=1e-6)


def test_set_params_normalize_after_fit_changes_the_key(tmp_path):
    X = np.random.default_rng(1).integers(0, 256, size=(2, 40, 40), dtype=np.uint8)
    enc = CodaEncoder(**TINY, normalize="l2", cache=tmp_path / "c").fit()
    normed = enc.transform(X)
    enc.set_params(normalize=False)
    raw, _, hits, _ = enc.embed(X)
    assert hits == 0
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-5)


def test_same_weights_share_the_cache_across_processes_and_pickles(tmp_path):
    X = np.random.default_rng(2).integers(0, 256, size=(3, 40, 40), dtype=np.uint8)
    enc = CodaEncoder(**TINY, cache=tmp_path / "c").fit()
    enc.transform(X)
    weights = tmp_path / "w.safetensors"
    enc.save(weights)
    from_file = CodaEncoder(weights=weights, num_workers=0, cache=tmp_path / "c").fit()
    assert from_file.cache_key() == enc.cache_key()
    restored = pickle.loads(pickle.dumps(enc))
    for other in (from_file, restored):
        count = _counted(other)
        other.transform(X)
        assert count.images == 0


def test_unreadable_files_are_reported_and_never_cached(make_image_folder, tmp_path):
    folder = make_image_folder(n=2)
    bad = folder / "broken.png"
    bad.write_bytes(b"not a png")
    missing = folder / "missing.png"
    paths = [*sorted(folder.glob("img*.png")), bad, missing]
    enc = CodaEncoder(**TINY, cache=tmp_path / "c", on_error="skip").fit()
    with pytest.warns(UserWarning, match="skipped 2"):
        out, skipped, *_ = enc.embed(paths)
    assert np.isnan(out[2:]).all() and np.isfinite(out[:2]).all()
    assert sorted(skipped) == sorted(map(str, (bad, missing)))
    assert len(list((tmp_path / "c").rglob("*.emb"))) == 2
    with pytest.warns(UserWarning, match="skipped 2"):
        result = enc.embed(paths)
    assert (result.cache_hits, result.cache_misses) == (2, 2)
    raising = CodaEncoder(**TINY, cache=tmp_path / "c").fit()
    with pytest.raises(Exception, match="missing.png"):
        raising.transform([missing])


def test_disabled_and_explicit_cache_objects(tmp_path):
    X = np.random.default_rng(3).integers(0, 256, size=(2, 40, 40), dtype=np.uint8)
    off = CodaEncoder(**TINY, cache=joblib.Memory(None)).fit()
    count = _counted(off)
    off.transform(X)
    off.transform(X)
    assert count.images == 4
    explicit = CodaEncoder(**TINY, cache=EmbeddingCache(tmp_path / "e")).fit()
    explicit.transform(X)
    assert len(list((tmp_path / "e").rglob("*.emb"))) == 2
    with pytest.raises(Exception, match="cache"):
        CodaEncoder(**TINY, cache=42).fit()
