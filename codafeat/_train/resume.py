"""Checkpoints of a Coda run: what is saved, and the checks before a run resumes.

A checkpoint holds the student, the teacher, the intra-organ centre, the optimiser and the
run's metadata: the settings that must agree (``params``), the organs, the seed, the image
counts, steps per epoch and a hash of the image set (``run``). :func:`read_for_resume`
refuses a checkpoint written with other settings; :func:`restore` refuses one of other
data or another seed, since every schedule and the epoch order depend on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._defaults import PRETRAIN
from .checkpoint import checkpoint_path, latest_checkpoint, restore_module, restore_optimizer, save_checkpoint
from .loop import CodaTrainer

logger = logging.getLogger(__name__)

Checkpoint = tuple[Path, dict, dict]


def jsonable(v: Any) -> Any:
    """Tuples to lists and numpy scalars to Python ones, as JSON gives them back."""
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def save(
    checkpoint_dir: Any,
    trainer: CodaTrainer,
    *,
    epochs_done: int,
    history: list,
    params: dict,
    organs: list[str],
    run: dict[str, Any],
) -> Path:
    """Write the run's checkpoint (atomically, keeping the previous one)."""
    modules: dict[str, Any] = {"student": trainer.student_module, "teacher": trainer.teacher}
    modules.update(trainer.objective.state())
    meta = {
        "format": "codafeat-checkpoint",
        "epochs_done": epochs_done,
        "history": history,
        "params": params,
        "organs": organs,
        **run,
    }
    path = save_checkpoint(checkpoint_path(checkpoint_dir), modules=modules, optimizer=trainer.optimizer, meta=meta)
    logger.info("checkpoint written: %s (epoch %d)", path, epochs_done)
    return path


def read_for_resume(checkpoint_dir: Any, *, epochs: int, params: dict[str, Any]) -> Checkpoint | None:
    """``(path, tensors, meta)`` of the checkpoint to resume, checked against ``params``; ``None`` if none."""
    found = latest_checkpoint(checkpoint_dir)
    if found is None:
        logger.info("resume=True but no checkpoint in %s: starting from scratch", checkpoint_dir)
        return None
    path, tensors, meta = found
    if meta["epochs_done"] > epochs:
        raise ValueError(f"{path}: the checkpoint has {meta['epochs_done']} epochs done, more than epochs={epochs}")
    theirs = meta.get("params", {})
    # a setting added after the checkpoint was written ran at its default there
    theirs = {**{k: v for k, v in _json(PRETRAIN).items() if k not in theirs}, **theirs}
    diff = {k: (theirs.get(k), v) for k, v in params.items() if theirs.get(k) != v}
    if diff:
        raise ValueError(
            f"{path}: the checkpoint was written with other settings, cannot resume: "
            + ", ".join(f"{k}={a!r} (checkpoint) vs {b!r} (now)" for k, (a, b) in diff.items())
        )
    return path, tensors, meta


def restore(ckpt: Checkpoint, trainer: CodaTrainer, *, organs: list[str], run: dict[str, Any]) -> tuple[int, list]:
    """Load a checkpoint into ``trainer``; returns ``(epochs done, history)``."""
    path, tensors, meta = ckpt
    if meta.get("organs") != organs:
        raise ValueError(f"{path}: the checkpoint's organs {meta.get('organs')} differ from the data's {organs}")
    diff = {k: (meta.get(k), v) for k, v in run.items() if k in meta and meta[k] != v}
    if diff:
        raise ValueError(
            f"{path}: cannot resume on other data or with another seed ("
            + ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
            + "); every schedule and the epoch order depend on them. Start a new run "
            "(another checkpoint_dir, or resume=False)."
        )
    restore_module(trainer.student_module, tensors, "student", source=str(path))
    restore_module(trainer.teacher, tensors, "teacher", source=str(path))
    if trainer.center is not None:
        trainer.center.copy_(tensors["intra_center"].to(trainer.center.device))
    restore_optimizer(trainer.optimizer, tensors)
    done = int(meta["epochs_done"])
    logger.info("resumed from %s after epoch %d", path, done)
    return done, list(meta.get("history", []))


def data_key(items: Any, kept: Any, labels: np.ndarray, *, with_identity: bool = True) -> str:
    """SHA-256 of the readable inputs and their organ labels: what a resume must find unchanged.

    A file counts by its path, size and modification time (the decoded cache's identity,
    :func:`codafeat.data.cache.shards.identity`), so swapped or edited pixels are refused, not only
    a changed file list; an in-memory image counts by its content. Keys written before file
    identities were part of them (``with_identity=False``, no ``"v2:"`` prefix) hash paths only.

    Examples
    --------
    >>> import numpy as np
    >>> a = data_key(["x.png", "y.png"], [0, 1], np.array([0, 1]))
    >>> a == data_key(["x.png", "y.png"], [0, 1], np.array([1, 0])), a[:3]
    (False, 'v2:')
    """
    from ..data.cache.shards import identity

    h = hashlib.sha256()
    for pos, i in enumerate(np.asarray(kept, dtype=int)):
        item = items[int(i)]
        if with_identity:
            h.update(identity(item, int(i)))
        elif isinstance(item, (str, os.PathLike)):
            h.update(os.path.abspath(os.fspath(item)).encode("utf-8", "surrogateescape"))
        else:
            h.update(np.ascontiguousarray(np.asarray(item)).tobytes())
        h.update(f"\0{int(labels[pos])}\n".encode())
    return ("v2:" if with_identity else "") + h.hexdigest()


def _json(value: Any) -> Any:
    """``value`` as it reads back from a checkpoint's JSON metadata (tuples become lists)."""
    return json.loads(json.dumps(value))
