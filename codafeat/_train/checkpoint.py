"""Training checkpoints as safetensors + JSON metadata, written atomically.

A checkpoint holds the student and teacher (backbone and heads), the intra-organ centre,
the AdamW state, the number of completed epochs and the history. It is replaced with a
temporary file and a rename, so a crash (even ``kill -9``) mid-write leaves the previous
checkpoint intact. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ..weights import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.safetensors"
_META_KEY = "codafeat_checkpoint"


def checkpoint_path(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            out[f"opt.{i}.{k}"] = t.detach().to("cpu").contiguous()
    return out


def save_checkpoint(
    path: str | os.PathLike,
    *,
    modules: dict[str, torch.nn.Module | torch.Tensor],
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically. ``modules`` maps a prefix to a module or a tensor."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, obj in modules.items():
        if torch.is_tensor(obj):
            tensors[prefix] = obj.detach().to("cpu").contiguous()
        else:
            for k, v in obj.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous()
    tensors.update(_optimizer_tensors(optimizer))
    data = st_save(tensors, metadata={_META_KEY: json.dumps(meta)})
    return atomic_write_bytes(path, data)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint file.

    Raises
    ------
    ValueError
        If the file is not a codafeat checkpoint.
    """
    try:
        with safe_open(os.fspath(path), framework="pt") as fh:
            meta_raw = (fh.metadata() or {}).get(_META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types for a bad file
        raise ValueError(f"{path}: not a readable codafeat checkpoint ({exc})") from exc
    if meta_raw is None:
        raise ValueError(f"{path}: safetensors file without codafeat checkpoint metadata")
    return tensors, json.loads(meta_raw)


def restore_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, *, source: str) -> None:
    """Load the ``prefix.``-tensors of a checkpoint into ``module`` (strict)."""
    sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = module.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: checkpoint part {prefix!r} does not match the model "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); was it written "
            "with other settings?"
        )


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Load the AdamW state saved by :func:`save_checkpoint`."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if not k.startswith("opt."):
            continue
        _, i, name = k.split(".", 2)
        state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
