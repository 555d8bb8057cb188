"""Training checkpoints as safetensors + JSON metadata, written atomically.

A checkpoint holds the student and teacher (backbone and heads), the intra-organ centre,
the AdamW state, the number of completed epochs and the history. It is written to a
temporary file and renamed into place, so a crash (even ``kill -9``) mid-write leaves the
previous checkpoint intact. The two newest are kept: ``checkpoint.safetensors`` and
``checkpoint.prev.safetensors`` (the one before), so a checkpoint written just after a
diverging step is never the only one; :func:`latest_checkpoint` falls back to the
previous one when the newest is missing or unreadable. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from .._fileio import atomic_write_bytes, remove_stale_temps

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.safetensors"
PREVIOUS_NAME = "checkpoint.prev.safetensors"
INCOMING_NAME = f".{CHECKPOINT_NAME}.incoming"
_META_KEY = "codafeat_checkpoint"


def checkpoint_path(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def previous_path(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / PREVIOUS_NAME


def remove_stale(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Remove temporary files of checkpoint writes that a crash interrupted (ours only)."""
    removed = []
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME, INCOMING_NAME):
        removed += remove_stale_temps(checkpoint_dir, name)
    return removed


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
    target = Path(path)
    previous = target.with_name(PREVIOUS_NAME) if target.name == CHECKPOINT_NAME else None
    if previous is None or not target.exists():
        return atomic_write_bytes(target, data)
    # Write the new one completely first, then shift: newest -> previous, new -> newest.
    tmp = target.with_name(INCOMING_NAME)
    atomic_write_bytes(tmp, data)
    os.replace(target, previous)
    os.replace(tmp, target)
    return target


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
    try:
        meta = json.loads(meta_raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed checkpoint metadata (not JSON: {exc})") from None
    _check_meta(meta, path)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a run that diverged, or damaged bytes: resuming from it would train on NaN
        raise ValueError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[:3]})")
    return tensors, meta


def _check_meta(meta: Any, path: Any) -> None:
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: malformed checkpoint metadata (a JSON {type(meta).__name__}, expected an object)")
    done = meta.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise ValueError(f"{path}: malformed checkpoint metadata (epochs_done={done!r})")
    for key, kind in (("params", dict), ("history", list), ("organs", list)):
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{path}: malformed checkpoint metadata ({key} is a {type(meta[key]).__name__})")


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest readable checkpoint in ``checkpoint_dir`` as ``(path, tensors, meta)``.

    When the newest is missing or unreadable and the previous one is readable, the
    previous one is returned with a warning; when neither exists, ``None``.

    Raises
    ------
    ValueError
        Only unreadable checkpoints exist (the newest one's error).
    """
    errors = []
    # A leftover ".incoming" file is complete (written atomically) and newer than the
    # others: a save was killed between its write and its renames.
    incoming = Path(checkpoint_dir) / INCOMING_NAME
    for path in (incoming, checkpoint_path(checkpoint_dir), previous_path(checkpoint_dir)):
        if not path.is_file():
            continue
        try:
            tensors, meta = load_checkpoint(path)
        except ValueError as exc:
            errors.append(exc)
            continue
        if errors:
            logger.warning("%s; resuming from the previous checkpoint %s instead", errors[0], path)
        return path, tensors, meta
    if errors:
        raise errors[0]
    return None


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
