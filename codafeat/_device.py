"""Where and how torch work runs: the one device and precision policy of every estimator.

:func:`resolve_device` turns a ``device`` parameter into a :class:`torch.device` (under
``torchrun`` with CUDA, each process's own ``cuda:LOCAL_RANK``), and :class:`DevicePolicy`
decides, for that device, everything that follows from it:

* placement of modules and batches (``channels_last`` memory format on CUDA, where cuDNN's
  bf16 convolutions run fastest in NHWC; the default layout on the CPU, where
  ``convnext_atto`` ran at the same speed either way);
* the autocast dtype: bfloat16 on GPUs that support it (Ampere and newer), float16 with a
  gradient scaler on older ones (:meth:`DevicePolicy.grad_scaler`), none, i.e. float32, on
  the CPU;
* the precision tag the embedding cache puts in its key (bf16 embeddings differ slightly
  from fp32 ones), and whether batches are pinned.

Estimators call these and nothing else decides a layout or a dtype.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def resolve_device(device: str | torch.device, *, local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked and returned.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    local_rank : int or None, default=None
        This process's ``LOCAL_RANK`` under ``torchrun``. With CUDA it picks the device
        (``cuda:LOCAL_RANK``), whatever index ``device`` named: each process of a node
        trains on its own GPU. ``None``: read ``LOCAL_RANK`` when ``torchrun`` set it
        (``WORLD_SIZE`` > 1), else keep ``device``.

    Raises
    ------
    ValueError
        If the device string is not understood, or CUDA is asked for but unavailable.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    if local_rank is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda" and local_rank is not None:
        n = torch.cuda.device_count()
        if int(local_rank) >= n:
            raise ValueError(
                f"this process has LOCAL_RANK={local_rank}, but the node has {n} CUDA device(s): start at most "
                f"one process per GPU (torchrun --nproc_per_node={n}), or use device='cpu'"
            )
        dev = torch.device("cuda", int(local_rank))
    return dev


@dataclass(frozen=True)
class DevicePolicy:
    """Placement and precision on one device (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> policy = DevicePolicy(torch.device("cpu"))
    >>> policy.precision, policy.channels_last
    ('fp32', False)
    >>> with policy.autocast():
    ...     y = policy.batch(torch.zeros(1, 1, 4, 4)) + 1
    >>> y.dtype
    torch.float32
    """

    device: torch.device

    def __post_init__(self) -> None:
        dtype = None
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if _bf16_supported(self.device) else torch.float16
        object.__setattr__(self, "_amp_dtype", dtype)

    @classmethod
    def for_device(cls, device: str | torch.device, *, local_rank: int | None = None) -> DevicePolicy:
        """The policy of :func:`resolve_device` ``(device, local_rank=...)``."""
        return cls(resolve_device(device, local_rank=local_rank))

    @property
    def channels_last(self) -> bool:
        """Whether modules and 4-D batches use the ``channels_last`` memory format."""
        return self.device.type == "cuda"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for plain float32."""
        return self._amp_dtype  # type: ignore[attr-defined]

    @property
    def precision(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``: the tag of the embeddings' precision (cache keys)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16 autocast (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    @property
    def pin_memory(self) -> bool:
        """Whether DataLoaders should pin their batches (for asynchronous copies)."""
        return self.device.type == "cuda"

    def module(self, module: M) -> M:
        """Move ``module`` to the device, in the policy's memory format.

        Its preprocessing layers (:class:`~codafeat.nn.preprocess.GrayToInput`) are told to
        write their output in that format, so no layout copy happens per batch.
        """
        from .nn.preprocess import GrayToInput

        for m in module.modules():
            if isinstance(m, GrayToInput):
                m.channels_last = self.channels_last
        if self.channels_last:
            return module.to(self.device, memory_format=torch.channels_last)
        return module.to(self.device)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Copy a batch to the device (asynchronously when pinned), in the memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the policy's dtype (disabled on the CPU)."""
        dtype = self.amp_dtype
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _bf16_supported(device: torch.device) -> bool:
    """Whether the GPU runs bfloat16 natively (compute capability 8.0+); assumed when unknown."""
    if not torch.cuda.is_available():
        return True  # the rules are read off a policy for a device this machine does not have
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (RuntimeError, AssertionError, ValueError):
        return True


def _flushing_denormals() -> bool:
    return float((torch.tensor(1e-40, dtype=torch.float32) * 1.0).item()) == 0.0


@contextlib.contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """On the CPU, flush denormal floats to zero while the block runs, then restore.

    Training produces tiny values (AdamW second moments, EMA differences) whose denormal
    arithmetic is many times slower on x86 CPUs: with it off, the optimiser step of a small
    ConvNeXt was measured 13x slower (3.6 s vs 0.27 s per step). The flag is process state
    (``torch.set_flush_denormal``), so it is put back as it was when the block ends; it
    only changes numbers below ~1e-38.

    Examples
    --------
    >>> import torch
    >>> with denormals_flushed(torch.device("cpu")):
    ...     pass
    """
    if device.type != "cpu":
        yield
        return
    before = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
