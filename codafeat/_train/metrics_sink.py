"""Per-epoch training records to ``metrics.jsonl`` and, when installed, TensorBoard."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN
    return v


class MetricsSink:
    """Appends one JSON line per epoch record to ``<log_dir>/metrics.jsonl`` and writes the
    numeric fields as TensorBoard scalars (``<log_dir>/tensorboard``) when the
    ``tensorboard`` package is installed. ``log_dir=None`` writes nothing.

    A line is written and flushed as soon as its epoch ends, so a crash keeps every
    finished epoch's record. Monitoring output is not the model: a write that fails (the
    folder removed, a full disk) is logged and warned about once, and training goes on.
    ``keep_through_epoch``: the lines of epochs up to it are kept (a resumed run continues
    the file); later ones (written after the checkpoint the run resumes from) and, for a
    fresh run (0), every old line are dropped.
    """

    def __init__(self, log_dir: str | os.PathLike | None, *, keep_through_epoch: int = 0) -> None:
        self.path: Path | None = None
        self._tb = None
        self.failures = 0
        if log_dir is None:
            return
        root = Path(log_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / METRICS_NAME
        self._truncate(int(keep_through_epoch))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            logger.debug("tensorboard is not installed: metrics go to %s only", self.path)
        else:
            self._tb = SummaryWriter(log_dir=str(root / "tensorboard"))

    def _truncate(self, keep_through_epoch: int) -> None:
        from .._fileio import atomic_write_bytes

        if self.path is None or not self.path.exists():
            return
        kept = []
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            logger.warning("%s: not UTF-8 text (%s); its unreadable lines are dropped", self.path, exc)
            text = raw.decode("utf-8", errors="replace")
        for line in text.splitlines():
            try:
                if int(json.loads(line).get("epoch", 0)) <= keep_through_epoch:
                    kept.append(line)
            except (ValueError, AttributeError, TypeError):
                continue  # a line cut by a crash
        atomic_write_bytes(self.path, "".join(x + "\n" for x in kept).encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record``; a failed write warns once and never raises."""
        if self.path is None:
            return
        line = json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=False)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
            if self._tb is not None:
                step = int(record.get("epoch", 0))
                for k, v in record.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v):
                        self._tb.add_scalar(f"coda/{k}", v, step)
                self._tb.flush()
        except OSError as exc:
            self._failed(exc, record)

    def _failed(self, exc: OSError, record: dict[str, Any]) -> None:
        self.failures += 1
        if self.failures > 1:
            logger.debug("metrics of epoch %s not written: %s", record.get("epoch"), exc)
            return
        msg = (
            f"cannot write training metrics to {self.path} ({exc}); training goes on and the per-epoch "
            "figures stay in history_ (this warning is shown once per run)"
        )
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
