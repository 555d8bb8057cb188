"""The error of every weights format and source (a module of its own: the reader, the config checks
and the registry all raise it, and none of them imports another for it)."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(ValueError):
    """A weights file or name is invalid: not safetensors, no config, or mismatched tensors.

    Examples
    --------
    >>> from codafeat.formats.weights import weights_from_bytes
    >>> try:
    ...     weights_from_bytes(b"not safetensors", source="w.bin")
    ... except WeightsError as exc:
    ...     print(str(exc)[:40])
    w.bin: not a safetensors file (header le
    """
