"""Shared, generic test fixtures (keep module-specific helpers in their test files)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"

# Property tests draw their examples at random. In CI (``CI`` set, as .ci/run runs) they are
# derandomized: the examples are a function of the test alone, so a submission's result never
# depends on a draw, and no example database carries draws from one run to the next. Locally
# they stay random (that is how hypothesis finds new cases); HYPOTHESIS_PROFILE picks either.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def shared_data() -> Path:
    """``<repo>/../shared/data`` (real radiographs); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA.resolve()


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a folder of small random greyscale images.

    ``make_image_folder(n=4, size=(40, 48), suffix=".png", subfolders=("a",), seed=0)``
    writes ``n`` images (uint8, PIL mode ``L``) into each subfolder (``()`` for the folder
    itself) and returns the folder. File names are ``img000.png``, ``img001.png``...
    """
    counter = iter(range(10**6))

    def make(
        n: int = 4,
        size: tuple[int, int] = (40, 48),
        suffix: str = ".png",
        subfolders: tuple[str, ...] = (),
        seed: int = 0,
    ) -> Path:
        root = tmp_path / f"images{next(counter)}"
        rng = np.random.default_rng(seed)
        for sub in subfolders or ("",):
            folder = root / sub
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, size=size, dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"img{i:03d}{suffix}")
        return root

    return make


# A script run by the resume tests as a child process, not a test module.
collect_ignore = ["_pretrain_worker.py"]
