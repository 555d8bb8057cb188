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
    "codafeat.weights": {
        name: "codafeat.formats.weights"
        for name in (
            "Weights",
            "WeightsError",
            "make_config",
            "save_weights",
            "load_weights",
            "read_config",
            "list_weights",
            "_weights_from_pickle",
        )
    },
    "codafeat._weights_wheel": {"build_weights_wheel": "codafeat.formats.wheel"},
    "codafeat.embed_cache": {n: "codafeat.data.cache.embeddings" for n in ("EmbeddingCache", "item_key", "model_key")},
    "codafeat.data.decoded_cache": {n: "codafeat.data.cache.decoded" for n in ("DecodedCache", "cache_size_for")},
    "codafeat.data.shards": {n: "codafeat.data.cache.shards" for n in ("identity", "bounds", "open_shard")},
    "codafeat.data.background_fill": {"start": "codafeat.data.cache.background_fill"},
    "codafeat.data.leases": {"lease": "codafeat.data.cache.leases"},
    "codafeat.data.tag_index": {"TagIndex": "codafeat.data.cache.tag_index"},
    "codafeat.timm_io": {"load_any": "codafeat.formats.timm", "export_timm": "codafeat.formats.timm"},
    "codafeat.model_card": {"model_card": "codafeat.formats.model_card"},
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
    assert codafeat.Weights.__module__ == "codafeat.formats.weights"


def test_weights_pickled_before_the_move_still_load():
    """A pickle of Weights names ``codafeat.weights._weights_from_pickle``: the old path must keep it."""
    import pickle
    import warnings

    import torch

    from codafeat.formats.weights import Weights, make_config

    cfg = make_config(backbone="test_convnext", embed_dim=64, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    data = pickle.dumps(Weights.from_state({"w": torch.ones(2)}, cfg), protocol=0)  # globals as text lines
    old = data.replace(b"codafeat.formats.weights", b"codafeat.weights")
    assert old != data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert pickle.loads(old).state_dict()["w"].tolist() == [1.0, 1.0]
