"""Deprecated: use :mod:`codafeat.phantoms` and :mod:`codafeat.data.manifest`.

``codafeat.datasets`` held the phantom maker and re-exported the manifest readers. The
phantoms now live in :mod:`codafeat.phantoms` (``from codafeat import
make_radiograph_phantoms`` keeps working), and the folder and manifest functions in
:mod:`codafeat.data.manifest`. This module re-exports them for one release, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .data.manifest import read_manifest, scan_organ_folder, write_image_folder
from .phantoms import PHANTOM_ORGANS, make_radiograph_phantoms

__all__ = ["PHANTOM_ORGANS", "make_radiograph_phantoms", "read_manifest", "scan_organ_folder", "write_image_folder"]

warnings.warn(
    "codafeat.datasets is deprecated and will be removed in the next release: import make_radiograph_phantoms "
    "from codafeat (or codafeat.phantoms), and read_manifest, scan_organ_folder, write_image_folder from "
    "codafeat.data.manifest",
    DeprecationWarning,
    stacklevel=2,
)
