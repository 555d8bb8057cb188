"""Intensity jitter and Gaussian blur of the views (codafeat/data/photometric.py), against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from codafeat.data.photometric import adjust_intensity, gaussian_blur


def test_adjust_intensity_matches_reference():
    x = torch.rand(3, 1, 9, 7)
    b = torch.tensor([0.7, 1.3, 1.0])
    c = torch.tensor([1.4, 0.6, 1.0])
    gm = torch.tensor([0.8, 1.2, 1.0])
    out = adjust_intensity(x.clone(), b, c, gm)
    for i in range(3):
        ref = np.clip(x[i, 0].numpy().astype(np.float64) * float(b[i]), 0, 1)
        m = ref.mean()
        ref = np.clip(m + float(c[i]) * (ref - m), 0, 1) ** float(gm[i])
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-5)
    torch.testing.assert_close(out[2], x[2])


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_matches_scipy(sigma):
    x = torch.rand(3, 1, 21, 17)
    sig = np.array([sigma, 0.0, sigma / 2 + 0.5])  # both radii as scipy's truncate=3 computes them
    out = gaussian_blur(x.clone(), sig)
    for i, s in enumerate(sig):
        img = x[i, 0].numpy().astype(np.float64)
        ref = img if s == 0 else ndimage.gaussian_filter(img, s, mode="mirror", truncate=3.0)
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-5)


def test_blur_keeps_constant_images_and_range():
    x = torch.full((2, 1, 12, 12), 0.3)
    torch.testing.assert_close(gaussian_blur(x.clone(), np.array([1.5, 3.0])), x)
