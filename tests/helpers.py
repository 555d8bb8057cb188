"""Helpers shared by several test modules: import them from here (``from helpers import ...``),
never from another test module, so that every test file runs on its own."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.utils import estimator_checks as ec


def write_dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored=None, **tags) -> Path:
    """A DICOM file of ``arr`` with ``tags``; pydicom's warnings about non-standard values (archives hold them)
    are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _write_dicom(path, arr, photometric=photometric, bits_stored=bits_stored, **tags)


def _write_dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored=None, **tags) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape[-2:]
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- pretraining
#: A CodaPretrainer that trains in seconds on the CPU.
TINY_PRETRAIN = dict(
    backbone="test_convnext",
    image_size=32,
    local_size=32,
    n_local_crops=2,
    head_out_dim=64,
    head_hidden_dim=32,
    head_bottleneck_dim=16,
    batch_size=8,
    epochs=2,
    warmup_epochs=0,
    lr=1e-3,
    random_state=0,
)


def tiny_pretrain_cli(folder: Path, out: Path, *extra: str, epochs: int = 1) -> list[str]:
    """``codafeat pretrain`` arguments for :data:`TINY_PRETRAIN` (one epoch, no progress bar)."""
    args = ["pretrain", str(folder), "--out", str(out)]
    for name, value in dict(TINY_PRETRAIN, epochs=epochs).items():
        if name != "random_state":
            args += ["--" + name.replace("_", "-"), str(value)]
    return [*args, "--verbose", "0", *extra]


def organ_image(organ: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if organ == "chest":  # bright horizontal "ribs"
        img = 120 + 80 * (np.sin(yy / (1.5 + rng.random())) > 0)
    elif organ == "hand":  # bright disc
        cx, cy = rng.integers(12, size - 12, 2)
        img = 40 + 180 * ((xx - cx) ** 2 + (yy - cy) ** 2 < 60)
    else:  # knee: vertical bar
        img = 30 + 190 * (np.abs(xx - size // 2 + rng.integers(-4, 5)) < 5)
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_organ_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for organ, n in counts.items():
        d = root / organ
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(organ_image(organ, rng)).save(d / f"{organ}_{i:03d}.png")
    return root


def interrupt_at(monkeypatch, epoch_to_stop: int) -> None:
    from codafeat._train.loop import CodaTrainer

    real = CodaTrainer.run_epoch

    def run_epoch(self, loader, epoch, **kw):
        if epoch == epoch_to_stop:
            raise KeyboardInterrupt
        return real(self, loader, epoch, **kw)

    monkeypatch.setattr(CodaTrainer, "run_epoch", run_epoch)


# --------------------------------------------------------------------------- sklearn checks
#: scikit-learn checks that need no data (the estimators take images, not 2-d arrays).
DATA_FREE_CHECKS = [
    ec.check_estimator_cloneable,
    ec.check_estimator_tags_renamed,
    ec.check_valid_tag_types,
    ec.check_estimator_repr,
    ec.check_no_attributes_set_in_init,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_mixin_order,
    ec.check_parameters_default_constructible,
    ec.check_do_not_raise_errors_in_init_or_set_params,
]


# --------------------------------------------------------------------------- segmentation
def shapes_dataset(n: int = 8, h: int = 48, w: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Discs (even) and squares (odd) brighter than a noisy background."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, h, w), np.float32)
    Y = np.zeros((n, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        r = int(rng.integers(min(h, w) // 8, min(h, w) // 4))
        cy, cx = int(rng.integers(r + 2, h - r - 2)), int(rng.integers(r + 2, w - r - 2))
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if i % 2 == 0 else ((abs(yy - cy) <= r) & (abs(xx - cx) <= r))
        Y[i] = m
        X[i] = 0.25 + 0.5 * m + 0.1 * rng.standard_normal((h, w))
    return np.clip(X, 0, 1), Y


# --------------------------------------------------------------------------- fine-tuning
FINE_TUNE_TINY = dict(
    backbone="test_convnext", image_size=64, batch_size=16, augment=False, device="cpu", num_workers=0
)
#: Settings that let gradients move a random test_convnext far enough in 15 epochs.
FINE_TUNE = dict(FINE_TUNE_TINY, epochs=15, lr=3e-3, encoder_lr_factor=1.0, random_state=0)
#: The scikit-learn checks of the fine-tuning estimators.
FINE_TUNE_CHECKS = [*DATA_FREE_CHECKS, ec.check_param_validation, ec.check_estimators_unfitted]


#: Normalisation of the tiny weights configs (not ImageNet's, so that a test can tell them apart).
TINY_MEAN = (0.5, 0.4, 0.3)
TINY_STD = (0.2, 0.25, 0.3)


def tiny_config(**overrides) -> dict:
    """A weights config of timm's ``test_convnext`` at 32 px, with ``overrides``."""
    from codafeat.formats.weights import make_config

    cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=TINY_MEAN, std=TINY_STD)
    cfg.update(overrides)
    return cfg
