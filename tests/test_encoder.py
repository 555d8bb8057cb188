"""CodaEncoder: the scikit-learn contract, weights, pickling, bad input and streaming."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks as ec
from sklearn.utils import get_tags

import codafeat._estimator.infer as infer_mod
import codafeat.data.loader as loader_mod
from codafeat import CodaEncoder, ImageReadError, SkippedImagesWarning, save_weights
from codafeat.formats.weights import load_weights, make_config, weights_from_bytes

from helpers import DATA_FREE_CHECKS

SMALL = dict(backbone="test_convnext", image_size=32)
N_FEATURES = 64


def encoder(**kw) -> CodaEncoder:
    return CodaEncoder(**{**SMALL, "random_state": 0, **kw})


@pytest.fixture(scope="module")
def fitted() -> CodaEncoder:
    return encoder().fit()


def images(n: int = 6, seed: int = 0, size=(40, 36)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size), dtype=np.uint8)


def bright_dark(n_per_class: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes any random conv net separates: dark and bright noisy images."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(0, 80, size=(n_per_class, 36, 36))
    bright = rng.integers(170, 256, size=(n_per_class, 36, 36))
    X = np.concatenate([dark, bright]).astype(np.uint8)
    y = np.array([0] * n_per_class + [1] * n_per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


def write_pngs(folder: Path, n: int, seed: int = 0, size=(40, 36)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images(n, seed, size)):
        p = folder / f"im{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


# --------------------------------------------------------------------------- sklearn checks
# these pass generic 2-d data to fit, which the encoder ignores (fit loads weights only),
# and test what happens before and around it: parameter validation, not-fitted errors...
FIT_ONLY_CHECKS = [
    ec.check_param_validation,
    ec.check_estimators_unfitted,
    ec.check_transformers_unfitted,
    ec.check_get_feature_names_out_error,
    ec.check_estimators_overwrite_params,
    ec.check_dont_overwrite_parameters,
    ec.check_estimators_fit_returns_self,
    ec.check_fit_check_is_fitted,
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS + FIT_ONLY_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_checks(check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check("CodaEncoder", CodaEncoder(**SMALL))


def test_tags_declare_image_input():
    tags = get_tags(CodaEncoder())
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.three_d_array and tags.input_tags.string
    assert tags.target_tags.required is False


def test_init_only_stores_and_defaults():
    enc = CodaEncoder()
    assert enc.get_params() == {
        "backbone": None,
        "batch_size": 32,
        "bit_depth": None,
        "cache": None,
        "device": "auto",
        "features": None,
        "grid_size": None,
        "image_size": None,
        "normalize": None,
        "num_workers": "auto",
        "on_error": "raise",
        "pooling": None,
        "random_state": None,
        "verbose": 0,
        "weights": None,
    }
    with pytest.raises(TypeError):
        CodaEncoder("weights.safetensors")  # keyword-only


@pytest.mark.parametrize(
    "params",
    [
        {"batch_size": 0},
        {"num_workers": -1},
        {"num_workers": "many"},
        {"pooling": "median"},
        {"features": "patches"},
        {"grid_size": 0},
        {"image_size": 4},
        {"on_error": "ignore"},
    ],
)
def test_invalid_params_raise_at_fit(params):
    enc = encoder(**params)  # constructing never raises
    with pytest.raises(ValueError, match=next(iter(params))):
        enc.fit()


def test_not_fitted_errors():
    enc = encoder()
    for call in (
        lambda: enc.transform(images(2)),
        enc.get_weights,
        lambda: enc.save("x.safetensors"),
        enc.get_feature_names_out,
    ):
        with pytest.raises(NotFittedError):
            call()


# --------------------------------------------------------------------------- transform
def test_output_float32_shape_and_rows_as_the_backbone_gives_them(fitted):
    raw = fitted.transform(images(5))
    assert raw.dtype == np.float32 and raw.shape == (5, N_FEATURES)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # the default conditions nothing (rule 4 of issue 30)
    np.testing.assert_array_equal(clone(fitted).set_params(normalize=False).fit().transform(images(5)), raw)
    unit = clone(fitted).set_params(normalize="l2").fit().transform(images(5))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, rtol=1e-4, atol=1e-6)


def test_rows_do_not_depend_on_batching(fitted):
    X = images(7)
    full = fitted.transform(X)
    one_by_one = np.concatenate([fitted.transform(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(full, one_by_one, rtol=1e-4, atol=1e-5)
    small_batches = clone(fitted).set_params(batch_size=3).fit().transform(X)
    np.testing.assert_allclose(full, small_batches, rtol=1e-4, atol=1e-5)


def test_input_forms_agree(fitted, tmp_path):
    X = images(4)
    ref = fitted.transform(X)
    paths = write_pngs(tmp_path / "pngs", 4)
    np.testing.assert_allclose(fitted.transform(paths), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.transform(tmp_path / "pngs"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.transform([Image.fromarray(a) for a in X]), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.transform(np.repeat(X[..., None], 3, axis=-1)), ref, rtol=1e-5, atol=1e-6)

    # the same images as floats in [0, 1] travel as float batches: same embedding (at the
    # input size, so that no resize rounds the 8-bit images to integers)
    X32 = images(4, size=(32, 32))
    ref32 = fitted.transform(X32)
    np.testing.assert_allclose(fitted.transform(X32.astype(np.float32) / 255), ref32, rtol=1e-4, atol=1e-5)
    mixed = fitted.transform([X32[0], X32[1].astype(np.float32) / 255, X32[2], X32[3]])  # one float in the batch
    np.testing.assert_allclose(mixed, ref32, rtol=1e-4, atol=1e-5)


def test_empty_input_gives_empty_output(fitted):
    assert fitted.transform([]).shape == (0, N_FEATURES)


def test_random_state_reproducibility():
    X = images(3)
    a = encoder(random_state=7).fit().transform(X)
    b = encoder(random_state=7).fit().transform(X)
    c = encoder(random_state=8).fit().transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # fit does not touch torch's global RNG
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    encoder(random_state=7).fit()
    assert torch.equal(torch.rand(3), expected)


def test_pooling_changes_features():
    X = images(3, size=(64, 64))  # at 64 px the last feature map is 2 x 2 (at 32 px, 1 x 1)
    avg = encoder(pooling="avg", image_size=64).fit().transform(X)
    mx = encoder(pooling="max", image_size=64).fit().transform(X)
    assert avg.shape == mx.shape and not np.allclose(avg, mx)


# --------------------------------------------------------------------------- sklearn composition
def test_pipeline_fit_predict():
    X, y = bright_dark()
    pipe = Pipeline([("enc", encoder(normalize=False)), ("clf", LogisticRegression(max_iter=2000))])
    pipe.fit(X, y)
    pred = pipe.predict(X)
    assert pred.shape == y.shape and set(pred) <= {0, 1}
    assert (pred == y).mean() >= 0.9


def test_grid_search_over_pooling():
    X, y = bright_dark()
    pipe = Pipeline([("enc", encoder(normalize=False)), ("clf", LogisticRegression(max_iter=2000))])
    gs = GridSearchCV(pipe, {"enc__pooling": ["avg", "max"]}, cv=2).fit(X, y)
    assert gs.best_params_["enc__pooling"] in ("avg", "max")
    assert len(gs.cv_results_["params"]) == 2
    assert gs.best_estimator_.named_steps["enc"].model_ is not pipe.named_steps["enc"].__dict__.get("model_")


def test_cross_val_score():
    X, y = bright_dark()
    pipe = Pipeline([("enc", encoder(normalize=False)), ("clf", LogisticRegression(max_iter=2000))])
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_clone_is_unfitted_with_equal_params(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "model_")
    w = fitted.get_weights()
    cw = clone(CodaEncoder(weights=w))
    assert cw.weights is w  # immutable in-memory weights are shared, not copied


def test_set_output_pandas(fitted):
    pd = pytest.importorskip("pandas")
    enc = clone(fitted).set_output(transform="pandas").fit()
    df = enc.transform(images(3))
    assert isinstance(df, pd.DataFrame) and df.shape == (3, N_FEATURES)
    assert list(df.columns) == [f"codaencoder{i}" for i in range(N_FEATURES)]
    assert list(enc.get_feature_names_out()) == list(df.columns)
    np.testing.assert_array_equal(df.to_numpy(), fitted.transform(images(3)))


# --------------------------------------------------------------------------- persistence
def test_pickle_and_joblib_round_trips(fitted, tmp_path):
    X = images(4)
    ref = fitted.transform(X)
    state = fitted.__getstate__()
    assert "model_" not in state and isinstance(state["_model_bytes"], bytes)
    weights_from_bytes(state["_model_bytes"])  # the model travels as safetensors bytes
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(X), ref)
    joblib.dump(fitted, tmp_path / "enc.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "enc.joblib").transform(X), ref)
    unfitted = pickle.loads(pickle.dumps(encoder()))
    assert not hasattr(unfitted, "model_")


def test_save_never_replaces_a_file_that_holds_no_weights(fitted, tmp_path):
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n image bytes")
    with pytest.raises(FileExistsError, match=r"CodaEncoder.save: .*scan.png' exists and is not a safetensors"):
        fitted.save(image)
    assert image.read_bytes() == b"\x89PNG\r\n\x1a\n image bytes"
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(FileExistsError):
        fitted.save(empty)


def test_weights_from_file_and_memory_give_identical_embeddings(fitted, tmp_path):
    X = images(4)
    ref = fitted.transform(X)
    path = fitted.save(tmp_path / "w.safetensors")
    from_file = CodaEncoder(weights=path).fit()
    assert from_file.config_["backbone"] == "test_convnext" and from_file.image_size_ == 32
    np.testing.assert_array_equal(from_file.transform(X), ref)
    np.testing.assert_array_equal(CodaEncoder(weights=str(path)).fit().transform(X), ref)
    np.testing.assert_array_equal(CodaEncoder(weights=fitted.get_weights()).fit().transform(X), ref)
    # written by the library function too
    state, config = load_weights(path)
    save_weights(tmp_path / "w2.safetensors", state, config)
    np.testing.assert_array_equal(CodaEncoder(weights=tmp_path / "w2.safetensors").fit().transform(X), ref)
    # an explicit, matching backbone is fine; image_size may be overridden
    CodaEncoder(weights=path, backbone="test_convnext").fit()
    assert CodaEncoder(weights=path, image_size=48).fit().image_size_ == 48


def test_backbone_contradicting_weights(fitted, tmp_path):
    path = fitted.save(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="contradicts"):
        CodaEncoder(weights=path, backbone="convnext_atto").fit()


def test_weights_whose_tensors_do_not_match_config(fitted, tmp_path):
    state = fitted.get_weights().state_dict()
    config = make_config(backbone="test_convnext", embed_dim=N_FEATURES, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    key = next(k for k, v in state.items() if v.ndim == 4)
    bad = dict(state)
    bad[key] = torch.zeros(*bad[key].shape[:-1], bad[key].shape[-1] + 1)
    save_weights(tmp_path / "shape.safetensors", bad, config)
    with pytest.raises(ValueError, match="do not match.*wrong shape"):
        CodaEncoder(weights=tmp_path / "shape.safetensors").fit()
    missing = {k: v for k, v in state.items() if k != key}
    save_weights(tmp_path / "missing.safetensors", missing, config)
    with pytest.raises(ValueError, match="missing tensor"):
        CodaEncoder(weights=tmp_path / "missing.safetensors").fit()
    wrong_dim = dict(config, embed_dim=N_FEATURES + 1)
    save_weights(tmp_path / "dim.safetensors", state, wrong_dim)
    with pytest.raises(ValueError, match="embed_dim"):
        CodaEncoder(weights=tmp_path / "dim.safetensors").fit()
    other = dict(config, backbone="convnext_atto")
    save_weights(tmp_path / "other.safetensors", state, other)
    with pytest.raises(ValueError, match="other.safetensors"):
        CodaEncoder(weights=tmp_path / "other.safetensors").fit()


def test_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        CodaEncoder(weights=tmp_path / "nope.safetensors").fit()


# --------------------------------------------------------------------------- bad input, workers, streaming
def _with_bad_file(tmp_path: Path) -> tuple[list[str], str]:
    paths = write_pngs(tmp_path / "ok", 5)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    return paths[:2] + [str(bad)] + paths[2:], str(bad)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_image_raises_naming_it(fitted, tmp_path, num_workers):
    items, bad = _with_bad_file(tmp_path)
    enc = clone(fitted).set_params(num_workers=num_workers, batch_size=2).fit()
    with pytest.raises(ImageReadError, match="broken.png") as info:
        enc.transform(items)
    assert info.value.path == bad


@pytest.mark.parametrize("num_workers", [0, 2])
def test_on_error_skip_nan_rows_warning_and_skipped(fitted, tmp_path, num_workers):
    items, bad = _with_bad_file(tmp_path)
    enc = clone(fitted).set_params(on_error="skip", num_workers=num_workers, batch_size=2).fit()
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable image.*broken.png") as record:
        out = enc.transform(items)
    assert out.shape == (6, N_FEATURES)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    assert [w.message.skipped for w in record if isinstance(w.message, SkippedImagesWarning)] == [[bad]]
    with pytest.warns(SkippedImagesWarning):
        result = enc.embed(items)
    assert result.skipped == [bad] and result.cache_hits is None
    np.testing.assert_array_equal(result.embeddings, out)
    good = [p for p in items if p != bad]
    np.testing.assert_allclose(np.delete(out, 2, axis=0), fitted.transform(good), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.embed(good).skipped == []  # a clean run warns nothing


def test_transform_only_reads_the_fitted_encoder(fitted, tmp_path):
    """sklearn's contract: transform assigns no attribute (threads may share one encoder)."""
    items, bad = _with_bad_file(tmp_path)
    enc = clone(fitted).set_params(on_error="skip", cache=tmp_path / "cache").fit()
    before = {k: id(v) for k, v in vars(enc).items()}
    with pytest.warns(SkippedImagesWarning):
        enc.transform(items)
    with pytest.warns(SkippedImagesWarning):
        enc.transform(items)
    assert {k: id(v) for k, v in vars(enc).items()} == before
    assert not hasattr(enc, "skipped_") and not hasattr(enc, "cache_info_"), "what a call skipped is embed()'s"


def test_skipped_in_memory_image_is_named_by_index(fitted):
    enc = clone(fitted).set_params(on_error="skip").fit()
    X = [images(1)[0], np.full((8, 8), np.nan), images(1, seed=1)[0]]
    with pytest.warns(UserWarning, match="index 1"):
        out, skipped, *_ = enc.embed(X)
    assert np.isnan(out[1]).all() and skipped == ["<ndarray at index 1>"]


def test_num_workers_two_equals_zero(fitted, tmp_path):
    paths = write_pngs(tmp_path / "many", 11)
    zero = clone(fitted).set_params(num_workers=0, batch_size=4).fit().transform(paths)
    two = clone(fitted).set_params(num_workers=2, batch_size=4).fit().transform(paths)
    auto = clone(fitted).set_params(num_workers="auto", batch_size=4).fit().transform(paths)
    np.testing.assert_array_equal(zero, two)
    np.testing.assert_array_equal(zero, auto)


def test_auto_workers_probe_then_switch(fitted, tmp_path, monkeypatch):
    """With num_workers='auto' on CPU the first batch is timed in-process; when decoding is
    expensive the rest is decoded by workers, with results identical to num_workers=0."""
    paths = write_pngs(tmp_path / "auto", 7)
    calls = []
    monkeypatch.setattr(loader_mod, "available_cpus", lambda: 4)
    real_make_loader = infer_mod.make_loader

    def spy(*args, **kwargs):
        calls.append((kwargs["num_workers"], kwargs.get("start", 0), kwargs.get("stop")))
        return real_make_loader(*args, **kwargs)

    monkeypatch.setattr(infer_mod, "make_loader", spy)
    monkeypatch.setattr(infer_mod, "workers_after_probe", lambda d, m: 2)
    enc = clone(fitted).set_params(num_workers="auto", batch_size=3, device="cpu").fit()
    out = enc.transform(paths)
    assert calls == [(0, 0, 3), (2, 3, None)]
    np.testing.assert_array_equal(out, clone(fitted).set_params(num_workers=0, batch_size=3).fit().transform(paths))
    calls.clear()
    enc.transform(images(7))  # in-memory: no probe, no workers
    assert calls == [(0, 0, None)]


def test_transform_streams_batch_by_batch(fitted, monkeypatch):
    """Images are decoded one batch ahead of the model, never all up front."""
    events: list[str] = []
    real_decode = loader_mod.decode_image

    def counting_decode(*args, **kwargs):
        events.append("decode")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "decode_image", counting_decode)
    enc = clone(fitted).set_params(num_workers=0, batch_size=3).fit()
    handle = enc.model_.register_forward_hook(lambda *a: events.append("forward"))
    try:
        enc.transform(images(8))
    finally:
        handle.remove()
    assert events == ["decode"] * 3 + ["forward"] + ["decode"] * 3 + ["forward"] + ["decode"] * 2 + ["forward"]


def test_preprocessing_is_inside_the_model_channels_last_on_cuda(fitted):
    x = torch.from_numpy(images(2)).unsqueeze(1)
    pre = fitted.model_.pre
    assert pre.channels_last == (fitted.device_.type == "cuda")
    out = pre(x.to(fitted.device_)).cpu()
    assert out.shape == (2, 3, *x.shape[-2:])
    mean = torch.tensor(fitted.config_["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(fitted.config_["std"]).view(1, 3, 1, 1)
    ref = (x.float() / 255 - mean) / std
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_device_cuda_unavailable_is_clear():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        encoder(device="cuda").fit()


def test_verbose_progress_bar(fitted, capsys):
    clone(fitted).set_params(verbose=1).fit().transform(images(3))
    assert "embedding" in capsys.readouterr().err


def test_feature_layouts_are_stored_with_the_weights_and_used_by_transform(tmp_path):
    X = images(3)
    enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, features="grid", grid_size=2).fit()
    Z = enc.transform(X)
    assert Z.shape == (3, 64 * 4) and enc.config_["features"] == "grid" and enc.config_["grid_size"] == 2
    path = enc.save(tmp_path / "grid.safetensors")
    again = CodaEncoder(weights=path).fit()  # the layout comes from the weights
    np.testing.assert_array_equal(again.transform(X), Z)
    stages = CodaEncoder(weights=path, features="stages").fit()  # a parameter overrides the weights
    pooled = CodaEncoder(weights=path, features="pooled", normalize=False).fit().transform(X)
    Zs = CodaEncoder(weights=path, features="stages", normalize=False).fit().transform(X)
    assert stages.transform(X).shape == (3, 168)
    np.testing.assert_allclose(Zs[:, -64:], pooled, rtol=1e-5, atol=1e-6)
    assert len({e.cache_key() for e in (again, stages, CodaEncoder(weights=path, features="pooled").fit())}) == 3


def test_standard_normalisation_is_a_scaler_learned_in_fit_and_l2_or_none_as_before(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, X2 = images(10), images(4) * 0.5
    raw = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, normalize=None).fit()
    ref = StandardScaler().fit(raw.transform(X))  # the independent reference
    std = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, normalize="standard")
    np.testing.assert_allclose(std.fit_transform(X), ref.transform(raw.transform(X)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.transform(X2), ref.transform(raw.transform(X2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.feature_mean_, ref.mean_, rtol=1e-5, atol=1e-6)
    l2 = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, normalize=True).fit().transform(X)
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(
        CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, normalize="l2").fit().transform(X), l2
    )
    pipe = make_pipeline(
        CodaEncoder(backbone="test_convnext", image_size=32, random_state=0, normalize="standard"), LogisticRegression()
    ).fit(X, np.arange(10) % 2)
    np.testing.assert_allclose(pipe[0].feature_mean_, ref.mean_, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="learns each feature's mean and standard deviation from the images"):
        CodaEncoder(backbone="test_convnext", image_size=32, normalize="standard").fit()
    cached = CodaEncoder(
        backbone="test_convnext", image_size=32, random_state=0, normalize="standard", cache=tmp_path / "cache"
    ).fit(X)
    np.testing.assert_allclose(cached.transform(X2), std.transform(X2), rtol=1e-5, atol=1e-5)
