"""Image input: every accepted form, the scaling rules, DICOM, and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from codafeat.data.io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    as_image_list,
    as_unit_float,
    decode_image,
    find_images,
    load_image,
    load_images,
    read_dicom,
    read_image,
)

from helpers import write_dicom

pydicom = pytest.importorskip("pydicom")

RNG = np.random.default_rng(0)


def u8(shape=(20, 30), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Reference ITU-R 601-2 luminance in [0, 1] of an 8-bit RGB image."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def save(arr_or_img, path: Path, **kw) -> Path:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kw)
    return path


# --------------------------------------------------------------------------- file formats
def test_png_8bit_is_divided_by_255(tmp_path):
    a = u8()
    p = save(a, tmp_path / "a.png")
    out = load_image(p)
    assert out.dtype == np.float32 and out.shape == a.shape
    np.testing.assert_allclose(out, a / 255.0, rtol=0, atol=1e-7)
    d = decode_image(p)
    assert d.dtype == np.uint8
    np.testing.assert_array_equal(d, a)


def test_png_16bit_is_minmax_scaled_per_image(tmp_path):
    a = RNG.integers(1000, 5000, size=(20, 30)).astype(np.uint16)
    a[0, 0], a[0, 1] = 1000, 4999
    p = save(a, tmp_path / "a16.png")
    assert Image.open(p).mode.startswith("I;16")
    out = load_image(p)
    ref = (a.astype(np.float64) - 1000) / (4999 - 1000)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_constant_16bit_image_is_zeros(tmp_path):
    p = save(np.full((10, 10), 700, np.uint16), tmp_path / "c.png")
    np.testing.assert_array_equal(load_image(p), np.zeros((10, 10), np.float32))


def test_jpeg_gray_and_draft_resize(tmp_path):
    yy, xx = np.mgrid[0:256, 0:256]
    a = ((xx + yy) / 2).astype(np.uint8)  # smooth: JPEG keeps it closely
    p = save(a, tmp_path / "a.jpg", quality=95)
    full = load_image(p)
    assert np.abs(full - a / 255.0).mean() < 0.01
    small = load_image(p, size=32)  # decoded at 1/4 or 1/8 scale, then resized
    ref = np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR), np.float32) / 255
    assert small.shape == (32, 32)
    assert np.abs(small - ref).max() < 0.03


def test_jpeg_rgb_is_luminance(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    p = save(rgb, tmp_path / "c.jpeg", quality=98)
    out = load_image(p)
    assert abs(float(out.mean()) - float(luma(rgb).mean())) < 0.01


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_8_and_16_bit(tmp_path, dtype):
    a = RNG.integers(3, 200, size=(16, 24)).astype(dtype)
    p = save(a, tmp_path / "a.tif")
    out = load_image(p)
    if dtype == np.uint8:
        ref = a / 255.0
    else:
        ref = (a.astype(np.float64) - a.min()) / (a.max() - a.min())
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_tiff_float_in_unit_range_kept(tmp_path):
    a = RNG.random((12, 12)).astype(np.float32) * 0.5
    p = save(a, tmp_path / "f.tiff")
    np.testing.assert_allclose(load_image(p), a, atol=1e-7)


def test_bmp(tmp_path):
    a = u8((15, 17))
    np.testing.assert_allclose(load_image(save(a, tmp_path / "a.bmp")), a / 255.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_is_luminance_alpha_dropped(tmp_path, mode):
    rgb = u8((10, 12, 3), seed=1)
    arr = rgb if mode == "RGB" else np.concatenate([rgb, u8((10, 12, 1), seed=2)], axis=-1)
    out = load_image(save(arr, tmp_path / "c.png"))
    np.testing.assert_allclose(out, luma(rgb), atol=0.5 / 255 + 1e-6)


def test_palette_png_is_luminance(tmp_path):
    idx = RNG.integers(0, 3, size=(8, 9)).astype(np.uint8)
    colours = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 250]], np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(colours.ravel().tolist() + [0] * (768 - 9))
    p = save(img, tmp_path / "p.png")
    assert Image.open(p).mode == "P"
    np.testing.assert_allclose(load_image(p), luma(colours[idx]), atol=0.5 / 255 + 1e-6)
    # with a transparent index: still the colour's luminance (alpha dropped)
    p2 = save(img, tmp_path / "pt.png", transparency=1)
    np.testing.assert_allclose(load_image(p2), luma(colours[idx]), atol=0.5 / 255 + 1e-6)


def test_resize_shape_and_range(tmp_path):
    p = save(u8((50, 70)), tmp_path / "a.png")
    out = read_image(p, size=16)
    assert out.shape == (16, 16) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_resized_constant_image_stays_constant(tmp_path):
    p = save(np.full((100, 60), 77, np.uint8), tmp_path / "k.png")
    np.testing.assert_array_equal(decode_image(p, size=24), np.full((24, 24), 77, np.uint8))


# --------------------------------------------------------------------------- DICOM
def test_dicom_monochrome2_no_window_is_minmax(tmp_path):
    a = RNG.integers(100, 4000, size=(12, 10)).astype(np.uint16)
    p = write_dicom(tmp_path / "m2.dcm", a, bits_stored=12)
    ref = (a - a.min()) / (a.max() - a.min())
    np.testing.assert_allclose(load_image(p), ref, atol=1e-6)


def test_dicom_monochrome1_is_inverted_bone_bright(tmp_path):
    a = RNG.integers(100, 4000, size=(12, 10)).astype(np.uint16)
    m1 = load_image(write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", bits_stored=12))
    m2 = load_image(write_dicom(tmp_path / "m2.dcm", a, bits_stored=12))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    # in MONOCHROME1 the lowest stored value is the brightest pixel
    assert m1.ravel()[np.argmin(a)] == pytest.approx(1.0)


def test_dicom_rescale_then_linear_window_by_hand(tmp_path):
    raw = np.array([[0, 200, 400, 511], [512, 513, 600, 800], [1000, 2000, 3000, 4095]], np.uint16)
    slope, intercept, center, width = 2.0, -1024.0, 0.0, 401.0
    p = write_dicom(
        tmp_path / "w.dcm",
        raw,
        photometric="MONOCHROME1",
        bits_stored=12,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=center,
        WindowWidth=width,
    )
    hu = raw.astype(np.float64) * slope + intercept
    # DICOM PS3.3 C.11.2.1.2.1 (LINEAR), onto [0, 1]; then MONOCHROME1 inverted
    expected = np.empty_like(hu)
    for i, x in np.ndenumerate(hu):
        if x <= center - 0.5 - (width - 1) / 2:
            y = 0.0
        elif x > center - 0.5 + (width - 1) / 2:
            y = 1.0
        else:
            y = (x - (center - 0.5)) / (width - 1) + 0.5
        expected[i] = 1.0 - y
    np.testing.assert_allclose(load_image(p), expected, atol=1e-6)
    assert 0.0 < load_image(p)[1, 0] < 1.0  # inside the window: not clipped


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_dicom_window_functions_by_hand(tmp_path, function):
    raw = np.arange(0, 1200, 50, dtype=np.uint16).reshape(4, 6)
    c, w = 600.0, 500.0
    p = write_dicom(tmp_path / "f.dcm", raw, WindowCenter=c, WindowWidth=w, VOILUTFunction=function)
    x = raw.astype(np.float64)
    ref = np.clip((x - c) / w + 0.5, 0, 1) if function == "LINEAR_EXACT" else 1 / (1 + np.exp(-4 * (x - c) / w))
    np.testing.assert_allclose(load_image(p), ref, atol=1e-6)


def test_dicom_multivalued_window_uses_first(tmp_path):
    raw = np.arange(0, 1000, 10, dtype=np.uint16).reshape(10, 10)
    p = write_dicom(tmp_path / "mv.dcm", raw, WindowCenter=[300, 700], WindowWidth=[201, 51])
    x = raw.astype(np.float64)
    np.testing.assert_allclose(load_image(p), np.clip((x - 299.5) / 200 + 0.5, 0, 1), atol=1e-6)


def test_dicom_8bit_no_window_divided_by_255_and_resized(tmp_path):
    a = u8((16, 16))
    p = write_dicom(tmp_path / "e.dcm", a)
    np.testing.assert_allclose(load_image(p), a / 255.0, atol=1e-6)
    assert load_image(p, size=8).shape == (8, 8)


def test_dicom_multiframe_uses_first_frame_and_magic_without_suffix(tmp_path):
    frames = np.stack([u8((8, 8), seed=1), u8((8, 8), seed=2)])
    p = write_dicom(tmp_path / "multi_no_suffix", frames)
    np.testing.assert_allclose(load_image(p), frames[0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_dicom(p), frames[0] / 255.0, atol=1e-6)


def test_dicom_without_pixels_and_garbage_dicom_name_the_file(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = "nobody"
    nopix = tmp_path / "nopix.dcm"
    ds.save_as(nopix, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="nopix.dcm"):
        load_image(nopix)
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"this is not dicom at all" * 10)
    with pytest.raises(ImageReadError, match="garbage.dcm"):
        load_image(bad)


# --------------------------------------------------------------------------- real fixtures
def test_real_rgb_png_fixture(shared_data):
    path = shared_data / "fixtures" / "tbx11k" / "health" / "h0001.png"
    if not path.is_file():
        pytest.skip("fixture missing")
    with Image.open(path) as im:
        assert im.mode == "RGB"
        ref = np.asarray(im.convert("L"), np.float32) / 255
    out = load_image(path)
    assert out.shape == (512, 512)
    np.testing.assert_array_equal(out, ref)
    assert load_image(path, size=224).shape == (224, 224)


def test_real_jpeg_compressed_dicom_fixture(shared_data):
    files = sorted((shared_data / "fixtures" / "siim_dicom").glob("*.dcm"))
    if not files:
        pytest.skip("fixture missing")
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG baseline
    out = load_image(files[0])
    assert out.shape == (1024, 1024) and out.dtype == np.float32
    # 8-bit MONOCHROME2 without window or rescale: stored value / 255
    np.testing.assert_allclose(out, ds.pixel_array / 255.0, atol=1e-6)


# --------------------------------------------------------------------------- in-memory input
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_stacked_arrays(dtype):
    base = RNG.integers(0, 250, size=(3, 10, 12))
    X = (
        (base / 250.0).astype(dtype)
        if np.dtype(dtype).kind == "f"
        else (base * (257 if dtype == np.uint16 else 1)).astype(dtype)
    )
    items = as_image_list(X)
    assert len(items) == 3
    imgs, skipped = load_images(X)
    assert skipped == [] and len(imgs) == 3
    for img, ref in zip(imgs, X):
        if dtype == np.uint8:
            expected = ref / 255.0
        elif dtype == np.uint16:
            expected = (ref - ref.min()) / (ref.max() - ref.min())
        else:
            expected = ref  # already in [0, 1]: kept
        np.testing.assert_allclose(img, expected, atol=1e-6)


def test_float_out_of_range_is_minmax():
    a = np.array([[-2.0, 0.0], [2.0, 6.0]])
    np.testing.assert_allclose(load_image(a), (a + 2) / 8, atol=1e-7)


@pytest.mark.parametrize("c", [1, 3, 4])
def test_channel_last_arrays(c):
    rgb = u8((2, 6, 7, 3), seed=4)
    X = rgb[..., :1] if c == 1 else (rgb if c == 3 else np.concatenate([rgb, u8((2, 6, 7, 1))], -1))
    imgs, _ = load_images(X)
    for img, ref in zip(imgs, rgb):
        expected = ref[..., 0] / 255.0 if c == 1 else luma(ref)
        np.testing.assert_allclose(img, expected, atol=0.5 / 255 + 1e-6)


def test_list_of_different_sizes_and_pil_images():
    items = [u8((10, 12)), u8((30, 7)), Image.fromarray(u8((5, 5))), Image.fromarray(u8((9, 9, 3)))]
    imgs, _ = load_images(items)
    assert [i.shape for i in imgs] == [(10, 12), (30, 7), (5, 5), (9, 9)]
    imgs, _ = load_images(items, size=8)
    assert all(i.shape == (8, 8) and i.dtype == np.float32 for i in imgs)


def test_pil_16bit_and_float_images():
    a = np.array([[0, 100], [200, 400]], np.uint16)
    np.testing.assert_allclose(load_image(Image.fromarray(a)), a / 400.0, atol=1e-6)
    f = np.array([[0.25, 0.5]], np.float32)
    np.testing.assert_allclose(load_image(Image.fromarray(f)), f)


def test_pandas_series_dataframe_and_path_arrays(tmp_path):
    pd = pytest.importorskip("pandas")
    paths = [str(save(u8(seed=i), tmp_path / f"{i}.png")) for i in range(3)]
    assert list(as_image_list(pd.Series(paths))) == paths
    assert list(as_image_list(pd.DataFrame({"path": paths}))) == paths
    assert list(as_image_list(np.array(paths))) == paths
    assert list(as_image_list(np.array(paths, dtype=object)[:, None])) == paths
    with pytest.raises(ValueError, match="exactly one column"):
        as_image_list(pd.DataFrame({"path": paths, "label": [0, 1, 0]}))


def test_folder_recursive_sorted_hidden_and_non_images_ignored(make_image_folder):
    root = make_image_folder(n=2, subfolders=("b", "a", "a/deep"))
    (root / "notes.txt").write_text("x")
    (root / ".hidden").mkdir()
    save(u8(), root / ".hidden" / "x.png")
    save(u8(), root / "a" / ".dot.png")
    found = find_images(root)
    rel = [str(Path(f).relative_to(root)) for f in found]
    assert rel == [
        "a/deep/img000.png",
        "a/deep/img001.png",
        "a/img000.png",
        "a/img001.png",
        "b/img000.png",
        "b/img001.png",
    ]
    assert list(as_image_list(root)) == found
    assert list(as_image_list(str(root))) == found
    assert as_image_list(found[0]) == [found[0]]  # a single file


# --------------------------------------------------------------------------- errors
def test_missing_empty_corrupt_truncated_and_renamed_files(tmp_path):
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(1).bytes(500))
    truncated = tmp_path / "truncated.png"
    full = save(u8((200, 200)), tmp_path / "full.png").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    renamed = tmp_path / "notes.png"
    renamed.write_text("hello, I am a text file\n" * 20)
    cases = {
        missing: "no such file",
        empty: "empty",
        corrupt: "corrupt",
        truncated: "truncated",
        renamed: "unsupported",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            load_image(path, size=8)
        assert info.value.path == str(path)
        assert str(path) in str(info.value)


def test_directory_in_a_list_is_an_error(tmp_path):
    with pytest.raises(ImageReadError, match="directory"):
        load_images([str(tmp_path)])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[np.nan, 0.5]]), "NaN"),
        (np.array([[np.inf, 0.5]]), "NaN or infinite"),
        (np.zeros((4, 4, 2)), "shape"),
        (np.zeros((4, 4, 5)), "shape"),
        (np.zeros((2, 2, 2, 2)), "shape"),
        (np.zeros((0, 4)), "empty"),
        (np.array([["a", "b"]]), "dtype"),
        (42, "unsupported input type int"),
    ],
)
def test_bad_in_memory_images_name_their_index(bad, match):
    with pytest.raises(ImageReadError, match=match) as info:
        load_images([np.zeros((3, 3), np.uint8), bad])
    assert "index 1" in str(info.value)


@pytest.mark.parametrize(
    "X", [np.zeros((5, 5)), np.zeros((2, 5, 5, 2)), np.zeros((1, 2, 3, 4, 5)), np.array([["a", "b"], ["c", "d"]])]
)
def test_bad_array_shapes_for_x(X):
    with pytest.raises(ValueError, match="shape"):
        as_image_list(X)


def test_bad_x_types_and_params(tmp_path):
    with pytest.raises(TypeError, match="X must be"):
        as_image_list(3.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        as_image_list(tmp_path / "empty")
    with pytest.raises(ValueError, match="size"):
        load_image(np.zeros((3, 3)), size=0)
    with pytest.raises(ValueError, match="on_error"):
        load_images([np.zeros((3, 3))], on_error="ignore")


def test_on_error_skip_counts_and_reports(tmp_path, caplog):
    good = [str(save(u8(seed=i), tmp_path / f"g{i}.png")) for i in range(2)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    items = [good[0], str(bad), np.full((3, 3), np.nan), good[1], str(tmp_path / "gone.jpg")]
    with pytest.raises(ImageReadError, match="bad.png"):
        load_images(items)
    with caplog.at_level(logging.WARNING, logger="codafeat.data.io"):
        imgs, skipped = load_images(items, size=8, on_error="skip")
    assert len(imgs) == 2
    np.testing.assert_array_equal(imgs[0], load_image(good[0], size=8))
    assert skipped == [str(bad), "<ndarray at index 2>", str(tmp_path / "gone.jpg")]
    assert "skipped 3 unreadable image(s)" in caplog.text and str(bad) in caplog.text


def test_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ImageReadError("a.png", "broken")))
    assert (err.path, err.reason) == ("a.png", "broken") and "a.png" in str(err)


# --------------------------------------------------------------------------- properties
_dtypes = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_])
_shapes = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),
)


@st.composite
def images(draw):
    dtype = draw(_dtypes)
    shape = draw(_shapes)
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(), size=st.one_of(st.none(), st.integers(1, 20)))
def test_output_is_float32_unit_range_and_sized(img, size):
    out = load_image(img, size=size)
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert out.shape == (img.shape[:2] if size is None else (size, size))
    dec = decode_image(img, size=size)
    assert dec.dtype in (np.uint8, np.float32)
    np.testing.assert_array_equal(as_unit_float(dec), out)


@settings(max_examples=60, deadline=None)
@given(img=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=16)))
def test_16bit_minmax_property(img):
    out = load_image(img)
    if img.min() == img.max():
        assert (out == 0).all()
    else:
        assert out.min() == 0.0 and out.max() == 1.0
        # order preserving
        assert (np.argsort(out.ravel(), kind="stable") == np.argsort(img.ravel(), kind="stable")).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)), size=st.integers(1, 24)
)
def test_png_roundtrip_property(tmp_path, a, size):
    p = save(a, tmp_path / "h.png")
    np.testing.assert_array_equal(decode_image(p), a)
    np.testing.assert_array_equal(decode_image(p, size=size), decode_image(a, size=size))


def test_folder_order_is_the_component_order_of_an_independent_walk(tmp_path):
    """find_images against os.walk + a sort by path components, on random trees (hypothesis)."""
    import os
    import shutil

    from hypothesis import given, settings
    from hypothesis import strategies as st

    name = st.text(alphabet="ab-_.B1", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
    entry = st.tuples(
        st.lists(name, min_size=0, max_size=3), name, st.sampled_from([".png", ".PNG", ".txt", ".dcm", ""])
    )

    @settings(max_examples=30, deadline=None)
    @given(st.lists(entry, min_size=1, max_size=12))
    def check(entries):
        root = tmp_path / "tree"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for dirs, stem, suffix in entries:
            folder = root.joinpath(*dirs)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / (stem + suffix)
                if not target.is_dir():
                    target.write_bytes(b"")
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue  # a name used both as a file and as a folder
        expected = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, root)
            if any(part.startswith(".") for part in Path(rel).parts if part != "."):
                continue
            expected += [
                os.path.join(dirpath, f)
                for f in filenames
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
            ]
        expected.sort(key=lambda p: os.path.relpath(p, root).split(os.sep))
        assert find_images(root) == expected

    check()


def test_the_pixel_limit_read_through_io_follows_set_max_image_pixels(tmp_path):
    """io is one import over files, intensity and decode: its MAX_IMAGE_PIXELS is the live setting, not a copy."""
    import codafeat.data.io as io_mod
    from codafeat.data import decode

    old = io_mod.set_max_image_pixels(1234)
    try:
        assert io_mod.MAX_IMAGE_PIXELS == decode.MAX_IMAGE_PIXELS == 1234
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")  # 1,600 pixels: over the limit
        with pytest.raises(ImageReadError, match="pixels"):
            io_mod.decode_image(str(tmp_path / "a.png"))
    finally:
        io_mod.set_max_image_pixels(old)
    assert io_mod.MAX_IMAGE_PIXELS == old
    assert set(io_mod.__all__) >= {"ImageReadError", "decode_image", "find_images", "to_unit_float", "MAX_IMAGE_PIXELS"}
