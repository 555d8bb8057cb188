"""Old module paths: every name still there for one release, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import sys

import pytest

OLD = {
    "codafeat.datasets": {
        "make_radiograph_phantoms": "codafeat.phantoms",
        "PHANTOM_ORGANS": "codafeat.phantoms",
        "read_manifest": "codafeat.data.manifest",
        "scan_organ_folder": "codafeat.data.manifest",
        "write_image_folder": "codafeat.data.manifest",
    },
    "codafeat.probes": {
        name: "codafeat.fewshot.probes"
        for name in (
            "FewShotSplit",
            "few_shot_report",
            "format_table",
            "knn_probe",
            "linear_probe",
            "make_linear_probe",
        )
    },
    "codafeat.fewshot_split": {"FewShotSplit": "codafeat.fewshot.split"},
    "codafeat.fewshot_report": {"FewShotReport": "codafeat.fewshot.report", "format_table": "codafeat.fewshot.report"},
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_the_old_module_warns_and_gives_the_same_objects(old):
    sys.modules.pop(old, None)
    new_modules = set(OLD[old].values())
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*({'|'.join(sorted(new_modules))})"):
        module = importlib.import_module(old)
    for name, new in OLD[old].items():
        assert getattr(module, name) is getattr(importlib.import_module(new), name), name


def test_the_package_exports_the_new_homes():
    import codafeat

    assert codafeat.FewShotSplit.__module__ == "codafeat.fewshot.split"
    assert codafeat.make_radiograph_phantoms.__module__ == "codafeat.phantoms"
