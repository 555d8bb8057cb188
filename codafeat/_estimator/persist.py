"""An estimator's fitted state: pickling it, keeping it through a failed fit, guarding its save.

Pickling of estimators that hold torch modules: one path for all of them.

skorch's idea: what depends on the device is turned into plain bytes in one place. The
modules named in ``_torch_modules`` are written as codafeat safetensors bytes (their
``state_dict`` and a config, see :func:`codafeat.formats.weights.weights_to_bytes`) instead of
torch's own pickles, and rebuilt on unpickling, on the estimator's ``device`` when it
exists there and on the CPU (with a warning) when it does not. So a fitted estimator
pickled on a GPU machine loads on a CPU-only one, ``joblib`` and ``cross_val_score`` with
``n_jobs`` can copy it, and no tensor ever travels as a pickle.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .._device import resolve_device
from ..formats.weights import module_state_from_bytes, weights_to_bytes

logger = logging.getLogger(__name__)


def _bytes_key(name: str) -> str:
    """``model_`` travels as ``_model_bytes``."""
    return f"_{name.rstrip('_')}_bytes"


def device_after_unpickling(device: Any) -> torch.device:
    """``device`` resolved, or the CPU (with a warning) when it does not exist on this machine."""
    try:
        return resolve_device(device)
    except ValueError:
        logger.warning("device %r is not available after unpickling; using the CPU", device)
        return torch.device("cpu")


class TorchStateMixin:
    """``__getstate__`` / ``__setstate__`` for estimators holding torch modules.

    A subclass names its module attributes in ``_torch_modules`` and implements
    :meth:`_module_config` (the config stored with a module) and :meth:`_restore_module`
    (rebuild the module from its tensors and config and install it).
    """

    _torch_modules: tuple[str, ...] = ("model_",)

    def _module_config(self, name: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _restore_module(
        self, name: str, tensors: dict[str, torch.Tensor], config: dict[str, Any], device: torch.device
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # BaseEstimator's: a copy of __dict__ + sklearn version
        for name in self._torch_modules:
            module = state.pop(name, None)
            if isinstance(module, nn.Module):
                state[_bytes_key(name)] = weights_to_bytes(module.state_dict(), self._module_config(name), prefix="")
        if any(_bytes_key(name) in state for name in self._torch_modules):
            state.pop("device_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blobs = {name: state.pop(_bytes_key(name)) for name in self._torch_modules if _bytes_key(name) in state}
        super().__setstate__(state)
        if not blobs:
            return
        device = device_after_unpickling(self.__dict__.get("device", "auto"))
        for name, data in blobs.items():
            tensors, config = module_state_from_bytes(data, source=f"pickled {type(self).__name__}.{name}")
            self._restore_module(name, tensors, config, device)


F = TypeVar("F", bound=Callable[..., Any])


def atomic_fit(fit: F) -> F:
    """Decorate ``fit`` so that a fit that fails leaves the estimator as it was.

    scikit-learn's rule: an exception (an unreadable image, a diverging run) or a
    ``KeyboardInterrupt`` during ``fit`` must not leave half of a new fit beside half of
    the old one (say, the new ``classes_`` with the old network). The estimator's attributes
    are put back exactly as they were before the call; an unfitted estimator stays unfitted.
    A fit replaces its fitted attributes, never changes them in place, so a shallow copy
    of ``__dict__`` is the whole state.

    Examples
    --------
    >>> class Est:
    ...     @atomic_fit
    ...     def fit(self, fail):
    ...         self.classes_ = [0, 1, 2]
    ...         if fail:
    ...             raise ValueError("unreadable image")
    ...         return self
    >>> est = Est().fit(False)
    >>> est.classes_ = [0, 1]
    >>> try:
    ...     est.fit(True)
    ... except ValueError:
    ...     pass
    >>> est.classes_
    [0, 1]
    """

    @functools.wraps(fit)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    return wrapper  # type: ignore[return-value]


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: a little-endian header length, then ``{``."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and 0 < struct.unpack("<Q", head[:8])[0] < (1 << 31) and head[8:9] == b"{"


def check_save_path(path: str | os.PathLike, *, owner: str) -> None:
    """Refuse to save weights over a file that holds no weights (an image, a CSV, a training input).

    A weights file (safetensors) at ``path`` is replaced, as ``torch.save`` would replace
    it; any other existing file is kept. Training inputs are images, never safetensors
    files, so no ``save`` can destroy an input of the last fit.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a safetensors file.
    """
    p = Path(os.path.expanduser(path))
    if p.is_file() and not _is_safetensors(p):
        raise FileExistsError(
            f"{owner}.save: {str(p)!r} exists and is not a safetensors weights file (an image or other data?); "
            "codafeat replaces only weights files: remove it first or choose another path"
        )
