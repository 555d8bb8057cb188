"""The encoder's embedding machinery: output conditioning and the embedding cache.

:func:`normalization` reads ``CodaEncoder(normalize=...)``; :class:`Embedded` is what
:meth:`codafeat.CodaEncoder.embed` returns; :class:`EmbeddingCacheMixin` gives an encoder its
cache key (weights, settings, precision) and the cached embedding path (see
:mod:`codafeat.data.cache.embeddings`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._defaults import FEATURES, GRID_SIZE, POOLING
from .._device import DevicePolicy
from ..data.cache.embeddings import EmbeddingCache, item_key, model_key
from ..data.io import ImageReadError

logger = logging.getLogger(__name__)

__all__ = ["NORMALIZATIONS", "Embedded", "EmbeddingCacheMixin", "normalization"]


class Embedded(NamedTuple):
    """What :meth:`CodaEncoder.embed` returns: the embeddings and what the call skipped or reused."""

    embeddings: np.ndarray
    #: Names of the images that could not be read (``on_error="skip"``); their rows are NaN.
    skipped: list[str]
    #: Embeddings found in the cache, and images embedded (``None`` without ``cache``).
    cache_hits: int | None
    cache_misses: int | None


#: What ``CodaEncoder(normalize=...)`` accepts besides True (= "l2"), False and None (= none).
NORMALIZATIONS = ("l2", "standard")


def normalization(value: Any) -> str | None:
    """``normalize`` as one of ``"l2"``, ``"standard"`` or ``None``.

    Examples
    --------
    >>> normalization(True), normalization(False), normalization("standard")
    ('l2', None, 'standard')
    """
    if value is True:
        return "l2"
    if value is False or value is None:
        return None
    return str(value)


class EmbeddingCacheMixin:
    """The embedding cache of :class:`~codafeat.CodaEncoder` (its ``cache`` parameter).

    The host provides ``model_``, ``config_``, ``device_``, ``image_size_``, ``bit_depth_``,
    ``_n_features_out``, ``_embed(items)`` and ``_warn_once(what)``.
    """

    def _embedding_cache(self) -> EmbeddingCache | None:
        if self.cache is None:
            return None
        cache = self.cache if isinstance(self.cache, EmbeddingCache) else EmbeddingCache(self.cache)
        return cache if cache.enabled else None

    def cache_key(self) -> str:
        """The embedding-cache key of this fitted encoder: weights, settings and precision.

        Two encoders with the same key give the same embeddings for the same image.
        """
        check_is_fitted(self, "model_")
        memo = self.__dict__.setdefault("_memo", {})  # encoders pickled by codafeat < 0.3 have none
        if memo.get("weights_digest") is None:
            state = self.model_.backbone.state_dict()
            memo["weights_digest"] = model_key(state, image_size=0, pooling="", normalize=False)
        cfg = self.config_
        return model_key(
            memo["weights_digest"].encode(),
            image_size=self.image_size_,
            pooling=cfg.get("pooling", POOLING),
            normalize=normalization(self.normalize) == "l2",  # standardisation comes after the cache
            extra={
                **(
                    {"features": cfg["features"], "grid_size": cfg.get("grid_size", GRID_SIZE)}
                    if cfg.get("features", FEATURES) != FEATURES
                    else {}
                ),
                "backbone": cfg["backbone"],
                "in_chans": cfg["in_chans"],
                "mean": list(cfg["mean"]),
                "std": list(cfg["std"]),
                # bf16 autocast on CUDA gives (slightly) different embeddings than fp32
                "precision": DevicePolicy(self.device_).precision,
                **({"bit_depth": self.bit_depth_} if self.bit_depth_ is not None else {}),
            },
        )

    def _embed_cached(self, items: Any, cache: EmbeddingCache) -> Embedded:
        mk = self.cache_key()
        keys: list[str | None] = []
        for i in range(len(items)):
            try:
                keys.append(item_key(items[i]))
            except (ImageReadError, TypeError):
                keys.append(None)  # unreadable or unkeyable: embedded (and reported) below, never cached
        known = np.array([i for i, k in enumerate(keys) if k is not None], dtype=np.intp)
        found, missing = cache.lookup(mk, [keys[i] for i in known], n_features=self._n_features_out)
        hit = np.delete(np.arange(len(known)), missing)  # positions in `known` found in the cache
        out = np.full((len(items), self._n_features_out), np.nan, dtype=np.float32)
        out[known[hit]] = found[hit]
        todo = np.setdiff1d(np.arange(len(items)), known[hit])
        logger.info("embedding cache %s: %d hit(s), %d image(s) to embed", cache, len(hit), len(todo))
        skipped: list[str] = []
        if len(todo):
            sub = items[todo] if isinstance(items, np.ndarray) else [items[i] for i in todo]
            emb, skipped = self._embed(sub)
            out[todo] = emb
            store = [j for j, i in enumerate(todo) if keys[i] is not None]
            try:
                cache.store(mk, [keys[todo[j]] for j in store], emb[store])
            except OSError as exc:  # a full or read-only disk must not cost the embeddings
                if self._warn_once("cache store"):
                    logger.warning(
                        "embedding cache %s cannot store entries (%s); the embeddings are returned, "
                        "not cached (this warning is shown once per encoder)",
                        cache,
                        exc,
                    )
        return Embedded(out, skipped, len(hit), len(todo))
