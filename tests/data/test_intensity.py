"""The intensity contract (issue 11 item 5): how pixels map to [0, 1] is recorded at training,
applied by transform, and a mismatch is reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from codafeat import CodaEncoder, CodaPretrainer
from codafeat.data.cache.decoded import DecodedCache
from codafeat.data.io import decode_image, load_image

from helpers import TINY_PRETRAIN as TINY
from helpers import make_organ_folder, write_dicom


def _png16(path, values):
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    return str(path)


def test_fixed_bit_depth_keeps_the_detector_scale(tmp_path):
    dark = np.full((16, 16), 100, np.uint16)
    dark[4:8, 4:8] = 140  # a nearly empty 12-bit image: noise-level contrast
    path = _png16(tmp_path / "dark.png", dark)
    minmax = load_image(path)
    fixed, kind = decode_image(path, bit_depth=12, with_kind=True)
    assert minmax.max() == 1.0 and minmax.min() == 0.0, "min-max stretches the noise to full contrast"
    assert kind == "fixed"
    np.testing.assert_allclose(fixed, dark / 4095, rtol=1e-6)
    over = decode_image(np.array([[0, 5000]], np.uint16), bit_depth=12)
    assert over.max() == 1.0, "values above the bit depth are clipped"
    with pytest.raises(ValueError, match="bit_depth"):
        decode_image(path, bit_depth=8)


def test_kinds_name_every_rule(tmp_path):
    assert decode_image(np.zeros((4, 4), np.uint8), with_kind=True)[1] == "8bit"
    assert decode_image(np.full((4, 4), 0.5, np.float32), with_kind=True)[1] == "unit"
    assert decode_image(np.arange(16, dtype=np.float32).reshape(4, 4), with_kind=True)[1] == "minmax"
    assert decode_image(_png16(tmp_path / "w.png", np.arange(16).reshape(4, 4) * 100), with_kind=True)[1] == "minmax"


def test_dicom_kinds_and_fixed_depth(tmp_path):
    pytest.importorskip("pydicom")

    def write(name, arr, **tags):
        return str(write_dicom(tmp_path / name, arr, bits_stored=12, **tags))

    arr = np.array([[0, 1000], [2000, 4095]], np.uint16)
    plain = write("plain.dcm", arr)
    assert decode_image(plain, with_kind=True)[1] == "minmax"
    img, kind = decode_image(plain, bit_depth=12, with_kind=True)
    assert kind == "fixed" and img[0, 1] == pytest.approx(1000 / 4095)
    windowed = write("voi.dcm", arr, WindowCenter=2048, WindowWidth=4096)
    assert decode_image(windowed, bit_depth=12, with_kind=True)[1] == "voi", "a VOI window wins over the bit depth"


def test_cache_key_and_kinds_follow_the_bit_depth(tmp_path):
    items = [np.array([[0, 4095], [100, 200]], np.uint16), np.zeros((2, 2), np.uint8)]
    assert DecodedCache.cache_key(items, 8) != DecodedCache.cache_key(items, 8, bit_depth=12)
    cache = DecodedCache.build(items, 8, cache_dir=tmp_path / "c", bit_depth=12)
    assert cache.kinds == {"fixed": 1, "8bit": 1}
    again = DecodedCache.build(items, 8, cache_dir=tmp_path / "c", bit_depth=12)
    assert again.kinds == cache.kinds, "a reused cache keeps its kinds"


def test_pretrainer_records_the_contract_and_the_encoder_warns_once(tmp_path):
    folder = make_organ_folder(tmp_path / "data", {"chest": 8, "hand": 8})  # 8-bit PNGs
    pre = CodaPretrainer(**dict(TINY, epochs=1, monitor_every=0)).fit(folder)
    cfg = pre.encoder_.config_
    assert cfg["intensity"] == {"bit_depth": None, "kinds": {"8bit": 16}}
    enc = pre.encoder_
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.transform(np.zeros((2, 40, 40), np.uint8))  # 8-bit: as trained, no warning
    wide = np.random.default_rng(0).integers(0, 4096, (3, 40, 40)).astype(np.uint16)
    with pytest.warns(UserWarning, match=r"3 image\(s\) by per-image min-max.*trained on images scaled by 8-bit"):
        enc.transform(wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.transform(wide)  # once per encoder


def test_encoder_bit_depth_is_applied_saved_and_keys_the_cache(tmp_path):
    wide = np.random.default_rng(1).integers(0, 4096, (2, 40, 40)).astype(np.uint16)
    base = dict(backbone="test_convnext", image_size=32, random_state=0)
    minmax = CodaEncoder(**base).fit()
    fixed = CodaEncoder(**base, bit_depth=12).fit()
    assert not np.allclose(minmax.transform(wide), fixed.transform(wide))
    assert fixed.cache_key() != minmax.cache_key()
    path = fixed.save(tmp_path / "w.safetensors")
    reloaded = CodaEncoder(weights=str(path)).fit()
    assert reloaded.bit_depth_ == 12
    np.testing.assert_allclose(reloaded.transform(wide), fixed.transform(wide), rtol=1e-6, atol=1e-6)
