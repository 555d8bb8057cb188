"""CodaEncoder: a pretrained (or random) backbone as a scikit-learn transformer."""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._defaults import BACKBONE, FEATURE_KINDS, FEATURES, GRID_SIZE, IMAGE_SIZE, MEAN, POOLING, STD
from ._device import DevicePolicy, resolve_device
from ._estimator.embedding import NORMALIZATIONS, Embedded, EmbeddingCacheMixin, normalization
from ._estimator.infer import forward_batches, progress_bar, warn_skipped
from ._estimator.params import BATCH_SIZE, BIT_DEPTH, DEVICE, IMAGE_SIDE, NUM_WORKERS, ON_ERROR, draw_seed
from ._estimator.persist import TorchStateMixin, atomic_fit, check_save_path
from .data.cache.embeddings import EmbeddingCache
from .data.intensity import unseen_intensity_message
from .data.io import as_image_list
from .formats.timm import load_any
from .formats.weights import Weights, make_config, strip_prefix
from .nn.backbone import (
    POOLINGS,
    FeatureExtractor,
    check_input_size,
    create_backbone,
    embed_dim,
    feature_dim,
    load_backbone_state,
)

logger = logging.getLogger(__name__)


class CodaEncoder(
    EmbeddingCacheMixin, TorchStateMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Embed radiographs with a Coda-pretrained (or randomly initialised) timm backbone.

    ``transform`` maps images to fixed-length feature vectors, so the encoder can sit in
    front of any scikit-learn estimator (``make_pipeline(CodaEncoder(...),
    LogisticRegression())``), inside cross-validation, kNN, clustering, etc. The model is
    built by ``fit``; the encoder is not trained by ``fit`` (its data is used only by
    ``normalize="standard"``, for each feature's mean and standard deviation).

    Parameters
    ----------
    weights : str, path, Weights or None, default=None
        A codafeat safetensors file, the name of installed weights (see
        :func:`codafeat.list_weights`), an in-memory :class:`~codafeat.formats.weights.Weights`,
        a timm / hub folder (``model.safetensors`` + ``config.json``, e.g. from
        ``codafeat export``), a plain timm safetensors checkpoint (e.g. ImageNet weights
        on disk; give ``backbone``), or ``None`` for a randomly initialised backbone (a
        baseline). See :func:`codafeat.formats.timm.load_any`; nothing is downloaded.
    backbone : str or None, default=None
        timm model name. ``None`` takes it from ``weights`` (or ``"convnext_base"``
        without weights); a name that contradicts ``weights`` is an error. Required for
        a plain timm checkpoint, which does not record its model.
    image_size : int or None, default=None
        Side of the square input; ``None`` takes it from ``weights`` (or 224).
    batch_size : int, default=32
        Images per forward pass. Memory is bounded by the batch, not the dataset.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode images while the model runs (``0``:
        decode in this process, between batches). ``"auto"`` picks a number from the
        device, the CPU cores available and the input (see :func:`auto_num_workers`).
    pooling : {"avg", "max", "avgmax"} or None, default=None
        Global pooling of the last feature map; ``None`` takes it from ``weights``
        (or ``"avg"``).
    features : {"pooled", "stages", "grid"} or None, default=None
        What each embedding holds: ``"pooled"``, the pooled last stage (``embed_dim``
        values); ``"stages"``, the pooled output of every stage concatenated (finer detail
        beside the abstract); ``"grid"``, the last feature map pooled to a ``grid_size`` x
        ``grid_size`` grid, flattened (where things are, which a global average discards).
        ``None`` takes it from ``weights`` (or ``"pooled"``). See
        :class:`~codafeat.nn.backbone.FeatureExtractor`.
    grid_size : int or None, default=None
        Side of the grid of ``features="grid"`` (1 to 16); ``None`` takes it from
        ``weights`` (or 2).
    normalize : {"l2", "standard"}, bool or None, default=None
        How each embedding is conditioned. ``None`` (or ``False``): the backbone's output
        as it is. ``"l2"`` (or ``True``): unit length (cosine geometry for kNN and
        clustering). ``"standard"``: every feature shifted and scaled to mean 0 and
        standard deviation 1 with the statistics of the images given to :meth:`fit`
        (``StandardScaler`` built in, learned inside a ``Pipeline``'s fit). The default was
        chosen on the dev suite for the first pipeline a user writes,
        ``make_pipeline(CodaEncoder(...), LogisticRegression())`` without a scaler: on NIH
        pneumonia (``benchmarks/conditioning.py``, ``small`` recipe) the output as it is
        scored AUC 71.6 against 70.9 for unit vectors and 69.0 standardised, and the rule
        fixed beforehand prefers the simplest within the spread (until 0.3.0 the default
        was ``"l2"``). Give ``LogisticRegression`` ``max_iter=1000``: with the default 100,
        some fits stop before converging. kNN, clustering and :class:`~codafeat.CodaIndex`
        with cosine distance do not depend on it.
    bit_depth : int or None, default=None
        How integer images of more than 8 bits (16-bit PNG/TIFF, DICOM without a VOI
        window) are mapped to [0, 1]. An int in [9, 32], e.g. 12 or 14 for a detector's bit
        depth, divides by ``2**bit_depth - 1``. ``None`` takes the rule the weights were
        trained with, which is per-image min-max when they record none (see
        :mod:`codafeat.data.io`). The weights record which intensity rules their training
        images went through. When an input goes through another rule, for example 16-bit
        images into a model trained on 8-bit ones, ``transform`` warns once: the model sees
        intensities it was not trained on.
    on_error : {"raise", "skip"}, default="raise"
        What to do with an unreadable image. ``"skip"`` gives its row NaN values (rows
        stay aligned with the input) and warns with the file names
        (:class:`~codafeat.SkippedImagesWarning`, whose ``skipped`` lists them);
        :meth:`embed` returns the list with the embeddings.
    cache : str, path, joblib.Memory, EmbeddingCache or None, default=None
        Where to keep embeddings between calls (see :mod:`codafeat.data.cache.embeddings`). Entries
        are keyed on the weights and settings (a hash of the backbone's tensors, input
        size, pooling, normalisation, precision) and on each image's *content*, so
        repeated cross-validation folds and repeated runs embed each image once, and an
        edited file is embedded again. ``joblib.Memory(None)`` or ``None``: no cache.
    random_state : int, RandomState or None, default=None
        Seed of the random initialisation when ``weights=None``.
    verbose : int, default=0
        ``>= 1`` shows a progress bar.

    Attributes
    ----------
    model_ : torch.nn.Module
        Preprocessing + backbone, in eval mode, on ``device_``.
    config_ : dict
        The weights config (backbone, embed_dim, image_size, mean, std, training...).
    device_ : torch.device
        The device in use.
    image_size_ : int
        Input side used by ``transform``.
    feature_mean_, feature_scale_ : ndarray of shape (n_features,)
        With ``normalize="standard"``: each feature's mean and standard deviation over the
        images given to :meth:`fit` (a deviation of 0 is kept as 1).

    ``transform`` only reads the fitted encoder (threads may share one): what a call
    skipped or found in the cache is returned by :meth:`embed`, not stored.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat import CodaEncoder
    >>> enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
    >>> enc.transform(np.zeros((2, 40, 40), dtype=np.uint8)).shape
    (2, 64)
    """

    _parameter_constraints: dict = {
        "weights": [None, str, os.PathLike, Weights],
        "backbone": [None, str],
        "image_size": [None, IMAGE_SIDE],
        "batch_size": BATCH_SIZE,
        "device": DEVICE,
        "num_workers": NUM_WORKERS,
        "pooling": [None, StrOptions(set(POOLINGS))],
        "features": [None, StrOptions(set(FEATURE_KINDS))],
        "grid_size": [None, Interval(Integral, 1, 16, closed="both")],
        "normalize": ["boolean", None, StrOptions(set(NORMALIZATIONS))],
        "bit_depth": BIT_DEPTH,
        "on_error": ON_ERROR,
        "cache": [None, str, os.PathLike, EmbeddingCache, HasMethods(["cache", "clear"])],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        weights: str | os.PathLike | Weights | None = None,
        backbone: str | None = None,
        image_size: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        num_workers: int | str = "auto",
        pooling: str | None = None,
        features: str | None = None,
        grid_size: int | None = None,
        normalize: str | bool | None = None,
        bit_depth: int | None = None,
        on_error: str = "raise",
        cache: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.weights = weights
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.pooling = pooling
        self.features = features
        self.grid_size = grid_size
        self.normalize = normalize
        self.bit_depth = bit_depth
        self.on_error = on_error
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []
        tags.non_deterministic = False
        return tags

    @atomic_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> CodaEncoder:
        """Build the model (load ``weights`` or initialise randomly); the encoder itself is not trained.

        Parameters
        ----------
        X : images or None
            Used only with ``normalize="standard"``: the images whose embeddings give each
            feature's mean and standard deviation (``feature_mean_``, ``feature_scale_``).
        y : ignored

        Returns
        -------
        self : CodaEncoder
        """
        self._build_model()
        if normalization(self.normalize) == "standard":
            self._learn_standardisation(self._raw(X))
        return self

    @atomic_fit
    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X).transform(X)``, embedding ``X`` once."""
        if normalization(self.normalize) != "standard":
            return super().fit_transform(X, y, **fit_params)
        self._validate_params()
        self._build_model()
        raw = self._raw(X)
        self._learn_standardisation(raw)
        return self._standardise(raw)

    def _raw(self, X: Any) -> np.ndarray:
        if X is None:
            raise ValueError(
                "normalize='standard' learns each feature's mean and standard deviation from the images given to "
                "fit: call fit(X) with images (a Pipeline does), or use normalize='l2' or None"
            )
        return self.embed(X, _standardise=False).embeddings

    def _learn_standardisation(self, raw: np.ndarray) -> None:
        rows = raw[~np.isnan(raw).any(axis=1)]
        if len(rows) == 0:
            raise ValueError("normalize='standard': none of the images given to fit could be embedded")
        scale = rows.std(axis=0)
        self.feature_mean_ = rows.mean(axis=0).astype(np.float32)
        self.feature_scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)

    def _standardise(self, E: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "feature_mean_", msg="normalize='standard' needs fit(X) with images before transform")
        return ((E - self.feature_mean_) / self.feature_scale_).astype(np.float32)

    def _build_model(self) -> None:
        device = resolve_device(self.device)
        if self.weights is None:
            name = self.backbone or BACKBONE
            pooling = self.pooling or POOLING
            seed = draw_seed(self.random_state)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = create_backbone(name, pooling=pooling)
            config = make_config(
                backbone=name,
                embed_dim=embed_dim(net),
                image_size=self.image_size or IMAGE_SIZE,
                mean=MEAN,
                std=STD,
                pooling=pooling,
                training={"init": "random", "seed": seed},
            )
        else:
            state, config, source = load_any(self.weights, backbone=self.backbone)
            pooling = self.pooling or config.get("pooling", POOLING)
            try:
                net = create_backbone(config["backbone"], pooling=pooling, in_chans=config["in_chans"])
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from exc
            load_backbone_state(net, state, source=source)
            if embed_dim(net) != config["embed_dim"]:
                raise ValueError(
                    f"{source}: config embed_dim={config['embed_dim']} but the backbone gives {embed_dim(net)}"
                )
            config = dict(config, pooling=pooling)
            if self.image_size is not None:
                config["image_size"] = int(self.image_size)
        check_input_size(net, config["backbone"], image_size=config["image_size"])
        config = dict(
            config,
            features=self.features or config.get("features", FEATURES),
            grid_size=int(self.grid_size or config.get("grid_size", GRID_SIZE)),
        )
        if self.bit_depth is not None:  # the rule transform applies is the one saved with the weights
            config = dict(config, intensity={**config.get("intensity", {}), "bit_depth": int(self.bit_depth)})
        self._install(net, config, device)

    def _install(self, net: torch.nn.Module, config: dict, device: torch.device) -> None:
        layout = dict(
            features=config.get("features", FEATURES),
            grid_size=int(config.get("grid_size", GRID_SIZE)),
            pooling=config.get("pooling", POOLING),
        )
        model = FeatureExtractor(net, config["mean"], config["std"], config["in_chans"], **layout)
        model.eval().requires_grad_(False)
        self.model_ = DevicePolicy(device).module(model)
        self.config_ = config
        self.device_ = device
        self.image_size_ = int(config["image_size"])
        self._n_features_out = feature_dim(net, layout["features"], layout["grid_size"])
        self.bit_depth_ = (config.get("intensity") or {}).get("bit_depth")
        # Filled, never reassigned, by transform: values derived from the fitted state (the weights
        # digest, on the first cached call) and the once-per-encoder warnings already shown.
        self._memo: dict[str, Any] = {}
        self._warned: set[str] = set()

    def transform(self, X: Any) -> np.ndarray:
        """Embed images, streaming them batch by batch.

        Parameters
        ----------
        X : folder, sequence of paths / arrays / PIL images, or array (n, h, w[, c])
            The images (see :func:`codafeat.data.io.as_image_list`).

        Returns
        -------
        ndarray of shape (n_images, n_features), float32
            One row per input image, in input order. With ``on_error="skip"`` the rows
            of unreadable images are NaN (listed in ``skipped_``).

        Raises
        ------
        ImageReadError
            An image cannot be read (``on_error="raise"``); the error names it.
        """
        return self.embed(X).embeddings

    def embed(self, X: Any, *, _standardise: bool = True) -> Embedded:
        """:meth:`transform`, with what the call skipped and found in the cache.

        Parameters
        ----------
        X : folder, sequence of paths / arrays / PIL images, or array (n, h, w[, c])
            The images.

        Returns
        -------
        Embedded
            ``embeddings`` (as :meth:`transform` returns them), ``skipped`` (names of the
            images that could not be read, with ``on_error="skip"``), ``cache_hits`` and
            ``cache_misses`` (``None`` without ``cache``).

        Examples
        --------
        >>> import numpy as np
        >>> enc = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit()
        >>> out = enc.embed(np.zeros((2, 40, 40), dtype=np.uint8))
        >>> out.embeddings.shape, out.skipped, out.cache_hits
        ((2, 64), [], None)
        """
        check_is_fitted(self, "model_")
        items = as_image_list(X)
        cache = self._embedding_cache()
        if cache is None:
            emb, skipped = self._embed(items)
            out = Embedded(emb, skipped, None, None)
        else:
            out = self._embed_cached(items, cache)
        if _standardise and normalization(self.normalize) == "standard":
            out = out._replace(embeddings=self._standardise(out.embeddings))
        return out

    def _warn_once(self, what: str) -> bool:
        """Whether the once-per-encoder warning ``what`` is still to be shown (and mark it shown)."""
        warned = self.__dict__.setdefault("_warned", set())  # encoders pickled by codafeat < 0.3 have none
        if what in warned:
            return False
        warned.add(what)
        return True

    def _embed(self, items: Any) -> tuple[np.ndarray, list[str]]:
        out = np.empty((len(items), self._n_features_out), dtype=np.float32)
        policy = DevicePolicy(self.device_)
        kinds: Counter = Counter()

        def collect(feats: torch.Tensor, batch: Any) -> None:
            kinds.update(k for k in batch.kinds if k)
            if normalization(self.normalize) == "l2":
                feats = torch.nn.functional.normalize(feats, dim=1)
            out[batch.index.numpy()] = feats.cpu().numpy()

        progress = progress_bar(self.verbose, len(items), "embedding")
        try:
            failures = forward_batches(
                self.model_,
                items,
                self.image_size_,
                collect,
                policy=policy,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                on_error=self.on_error,
                bit_depth=self.bit_depth_,
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
        self._check_intensity(kinds)
        out[[f.index for f in failures]] = np.nan
        skipped = warn_skipped(
            failures, context="CodaEncoder.transform", consequence="rows set to NaN; embed(X).skipped lists them"
        )
        return out, skipped

    def _check_intensity(self, kinds: Counter) -> None:
        """Warn once when inputs were scaled by a rule the weights' training images never went through."""
        trained = (self.config_.get("intensity") or {}).get("kinds")
        if not trained:
            return
        new = {k: n for k, n in kinds.items() if k not in trained}
        if not new or not self._warn_once("intensity"):
            return
        warnings.warn(
            f"CodaEncoder: {unseen_intensity_message(new, trained)} This warning is shown once per encoder.",
            UserWarning,
            stacklevel=4,
        )

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> Weights:
        """The fitted backbone and config as in-memory :class:`~codafeat.formats.weights.Weights`."""
        check_is_fitted(self, "model_")
        return Weights.from_state(self.model_.backbone.state_dict(), self.config_)

    def save(self, path: str | os.PathLike):
        """Write the fitted backbone to a codafeat safetensors file (atomically).

        An existing weights file at ``path`` is replaced; any other existing file (an image,
        an input of a fit) is not: ``FileExistsError``.
        """
        check_save_path(path, owner=type(self).__name__)
        return self.get_weights().save(path)

    # ------------------------------------------------------------------ pickling (see codafeat._estimator.persist)
    def _module_config(self, name: str) -> dict[str, Any]:
        return self.config_

    def _restore_module(self, name: str, tensors: dict, config: dict[str, Any], device: torch.device) -> None:
        net = create_backbone(config["backbone"], pooling=config.get("pooling", POOLING), in_chans=config["in_chans"])
        load_backbone_state(net, strip_prefix(tensors, "backbone."), source=f"pickled {type(self).__name__}")
        self._install(net, config, device)
