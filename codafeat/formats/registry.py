"""The registry of installed weights: names that ``pip``-installed distributions register.

A distribution registers weights with an entry point in the group ``codafeat.weights``
(:data:`ENTRY_POINT_GROUP`): ``NAME = module:function``, where ``function()`` returns the
path of a codafeat safetensors file. :func:`resolve_weights` turns what a user passes as
``weights`` (a file, or such a name) into a path; :mod:`codafeat.formats.wheel` builds the
distributions.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

from .errors import WeightsError

__all__ = ["ENTRY_POINT_GROUP", "list_weights", "registered_path", "resolve_weights"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "codafeat.weights"


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "an unknown distribution"


def list_weights() -> list[str]:
    """Names of the weights registered by installed distributions, sorted.

    A distribution registers weights with an entry point in the group
    ``codafeat.weights``: ``NAME = module:function``, where ``function()`` returns the
    path of a codafeat safetensors file. ``codafeat package-weights`` builds such a
    distribution (see :func:`build_weights_wheel`).

    Returns
    -------
    list of str
        The names accepted by ``CodaEncoder(weights=NAME)``.

    Examples
    --------
    >>> isinstance(list_weights(), list)  # names of installed weights wheels, often empty
    True
    """
    return sorted({ep.name for ep in _entry_points()})


def registered_path(name: str) -> Path:
    """The file behind a registered weights name.

    Raises
    ------
    WeightsError
        If no installed distribution registers ``name``, its entry point fails, or
        its file is missing.
    """
    matches = [ep for ep in _entry_points() if ep.name == name]
    if not matches:
        names = list_weights()
        raise WeightsError(
            f"weights {name!r} is neither an existing file nor a registered name; registered: "
            f"{names if names else 'none (pip install a codafeat-weights-* package)'}"
        )
    ep = matches[0]
    if len(matches) > 1:
        logger.warning(
            "weights %r is registered by several distributions (%s); using %s",
            name,
            ", ".join(_dist_name(m) for m in matches),
            _dist_name(ep),
        )
    try:
        obj = ep.load()
        value = obj() if callable(obj) else obj
        path = Path(os.fspath(value))
    except Exception as exc:
        raise WeightsError(
            f"registered weights {name!r} ({ep.value}, from {_dist_name(ep)}) failed to load: {exc}"
        ) from exc
    if not path.is_file():
        raise WeightsError(
            f"registered weights {name!r} (from {_dist_name(ep)}) points to a missing file {str(path)!r}"
        )
    return path


def resolve_weights(spec: str | os.PathLike) -> Path:
    """A weights file path: ``spec`` itself when it is a file, else a registered name.

    A :class:`os.PathLike`, or a string that looks like a path (it contains a path
    separator or ends in ``.safetensors``), must name an existing file.

    Raises
    ------
    WeightsError
        If ``spec`` is a missing file or an unknown name (the message lists the
        registered names).
    TypeError
        If ``spec`` is neither a string nor a path.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path or a registered name, got {type(spec).__name__}")
    path = Path(spec)
    if path.is_file():
        return path
    text = os.fspath(spec)
    looks_like_path = (
        not isinstance(spec, str)
        or path.suffix == ".safetensors"
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or path.exists()
        or not text
    )
    if looks_like_path:
        raise WeightsError(f"weights file {text!r} does not exist (or is not a file)")
    return registered_path(text)
