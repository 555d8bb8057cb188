"""The deprecated codafeat.datasets module: the old names for one release, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_the_old_module_warns_and_still_gives_every_name():
    sys.modules.pop("codafeat.datasets", None)
    with pytest.warns(DeprecationWarning, match="codafeat.datasets is deprecated.*codafeat.data.manifest"):
        old = importlib.import_module("codafeat.datasets")
    from codafeat import phantoms
    from codafeat.data import manifest

    assert old.make_radiograph_phantoms is phantoms.make_radiograph_phantoms
    assert old.PHANTOM_ORGANS is phantoms.PHANTOM_ORGANS
    for name in ("read_manifest", "scan_organ_folder", "write_image_folder"):
        assert getattr(old, name) is getattr(manifest, name)
