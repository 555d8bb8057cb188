"""What the fine-tuning estimators share: weights in, images in, the run, predictions out.

:class:`LinearHeadFineTuner` is the common base of :class:`~codafeat.CodaClassifier` and
:class:`~codafeat.CodaRegressor` (the paper's transfer network, :mod:`codafeat.nn.linear_head`);
:func:`resolve_weights` and :func:`run_epochs` serve :class:`~codafeat.CodaSegmenter` too.
Training runs on :class:`~codafeat._train.finetune.FineTuneTrainer`, inference on
:func:`~codafeat._estimator.infer.stream_batches`, pickling on :class:`~codafeat._estimator.persist.TorchStateMixin`:
one machinery for every fine-tuning estimator.
"""

from __future__ import annotations

import logging
import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._defaults import BACKBONE, IMAGE_SIZE, MEAN, POOLING, STD
from .._device import DevicePolicy
from .._train.callbacks import Callback
from .._train.finetune import EarlyStopping, EpochProgress, FineTuneTrainer, fit_epochs
from .._train.tasks import Task
from ..data.io import as_image_list
from ..data.seg_augment import SegAugment
from ..formats.timm import load_any
from ..formats.weights import Weights, make_config
from ..nn.backbone import POOLINGS, check_input_size, embed_dim
from ..nn.linear_head import LinearHeadNet, build_linear_head_net
from .infer import decode_to_tensor, forward_batches, warn_skipped
from .params import BATCH_SIZE, BIT_DEPTH, DEVICE, IMAGE_SIDE, NUM_WORKERS, ON_ERROR, draw_seed
from .persist import TorchStateMixin, check_save_path

logger = logging.getLogger(__name__)

#: A ``weights`` parameter that is a :class:`~codafeat.CodaEncoder` (fitted or not): its backbone is used.
ENCODER_LIKE = HasMethods(["fit", "get_weights"])


def resolve_weights(spec: Any, backbone: str | None) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any], str]:
    """``(state, config, source)`` of a ``weights`` parameter; ``state`` is None for random init.

    ``spec`` is anything :func:`codafeat.formats.timm.load_any` reads, a :class:`~codafeat.CodaEncoder`
    (an unfitted one is fitted first), or ``None``. An encoder is recognised by what it does
    (:data:`ENCODER_LIKE`: ``fit`` and ``get_weights``), so this module needs no estimator.
    """
    if spec is None:
        config = {
            "backbone": backbone or BACKBONE,
            "image_size": IMAGE_SIZE,
            "in_chans": 3,
            "mean": list(MEAN),
            "std": list(STD),
            "training": {"init": "random"},
        }
        return None, config, "random initialisation"
    if ENCODER_LIKE.is_satisfied_by(spec):
        if not hasattr(spec, "model_"):  # only its backbone is used: no output conditioning to learn
            spec = clone(spec)
            if "normalize" in spec.get_params():
                spec.set_params(normalize=None)
            spec = spec.fit()
        spec = spec.get_weights()
    state, config, source = load_any(spec, backbone=backbone)
    return state, dict(config), source


def tqdm_epochs(verbose: int, epochs: int) -> Any:
    """A progress bar over epochs when ``verbose``, else ``None``."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, desc="fine-tuning", unit="epoch")


def fine_tuning_tags(tags: Any) -> Any:
    """The scikit-learn tags of every fine-tuning estimator: images in, targets required."""
    tags.input_tags.two_d_array = False
    tags.input_tags.three_d_array = True
    tags.input_tags.string = True
    tags.target_tags.required = True
    tags.non_deterministic = True  # CUDA kernels; CPU fits with a fixed random_state repeat
    return tags


def run_epochs(
    trainer: FineTuneTrainer,
    images: torch.Tensor,
    targets: torch.Tensor,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    patience: int | None,
    verbose: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """:func:`~codafeat._train.finetune.fit_epochs` on the training and validation positions, with a progress
    bar when ``verbose``; ``patience=None`` trains every epoch (no early stopping)."""
    callbacks: list[Callback] = []
    progress = tqdm_epochs(verbose, epochs)
    if progress is not None:
        callbacks.append(EpochProgress(progress))
    stopper = EarlyStopping(patience) if patience is not None else None
    if stopper is not None:
        callbacks.append(stopper)
    history = fit_epochs(
        trainer,
        (images[train_idx], targets[train_idx]),
        (images[val_idx], targets[val_idx]) if len(val_idx) else None,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
    )
    return history, stopper.best_epoch if stopper is not None else None


def image_augment(value: Any) -> Any:
    """``augment`` of a classifier or regressor: the image half of :class:`SegAugment`, or None."""
    aug = SegAugment.from_param(value)
    if aug is None:
        return None

    def augment(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return aug.images(x, generator=generator), y

    return augment


class LinearHeadFineTuner(TorchStateMixin, BaseEstimator):
    """Base of the estimators that fine-tune a backbone with a linear head (not public).

    A subclass turns ``y`` into training targets (:meth:`_targets`), names its task
    (:meth:`_task`) and turns outputs into predictions; everything else is here.
    """

    _parameter_constraints: dict = {
        "weights": [None, str, os.PathLike, Weights, ENCODER_LIKE],
        "backbone": [None, str],
        "image_size": [None, IMAGE_SIDE],
        "pooling": [None, StrOptions(set(POOLINGS))],
        "freeze_encoder": ["boolean"],
        "lp_epochs": [Interval(Integral, 0, 1_000_000, closed="both")],
        "epochs": [Interval(Integral, 1, 1_000_000, closed="both")],
        "batch_size": BATCH_SIZE,
        "lr": [Interval(Real, 0, 1, closed="right")],
        "encoder_lr_factor": [Interval(Real, 0, 10, closed="both")],
        "weight_decay": [Interval(Real, 0, 10, closed="both")],
        "augment": ["boolean", None, dict, SegAugment],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, 1_000_000, closed="both")],
        "device": DEVICE,
        "num_workers": NUM_WORKERS,
        "bit_depth": BIT_DEPTH,
        "on_error": ON_ERROR,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    #: The fewest validation images whose score early stopping can follow.
    _min_validation: int = 1

    # ------------------------------------------------------------------ subclass hooks
    def _task(self) -> Task:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stratify(self, targets: torch.Tensor) -> np.ndarray | None:
        """Labels to stratify the validation split by (None: a plain random split)."""
        return None

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        return fine_tuning_tags(super().__sklearn_tags__())

    def _fit(self, X: Any, targets: torch.Tensor, n_outputs: int) -> None:
        """Build the network from ``weights`` and fine-tune it on ``X`` and ``targets`` (one per image)."""
        if int(self.lp_epochs) >= int(self.epochs) and not self.freeze_encoder:
            raise ValueError(
                f"lp_epochs={self.lp_epochs} leaves no epoch of epochs={self.epochs} to fine-tune the encoder in: "
                "lp_epochs must be less than epochs (set freeze_encoder=True to train the head only)"
            )
        items = as_image_list(X)
        if len(items) != len(targets):
            raise ValueError(f"X has {len(items)} image(s) but y has {len(targets)} target(s); give one per image")
        policy = DevicePolicy.for_device(self.device)
        rng = check_random_state(self.random_state)
        seed = draw_seed(rng)
        model, config = self._build_model(n_outputs, seed)
        size = int(config["image_size"])
        images, keep = self._training_images(items, size, config)
        targets = targets[torch.as_tensor(keep)]
        self._check_trainable(targets)
        train_idx, val_idx = self._split(targets, rng)
        model = policy.module(model)
        bs = min(int(self.batch_size), len(train_idx))
        steps_per_epoch = math.ceil(len(train_idx) / bs)
        trainer = FineTuneTrainer(
            model,
            encoder=model.encoder,
            task=self._task(),
            lr=float(self.lr),
            encoder_lr=float(self.lr) * float(self.encoder_lr_factor),
            weight_decay=float(self.weight_decay),
            freeze_encoder=bool(self.freeze_encoder),
            total_steps=steps_per_epoch * int(self.epochs),
            lp_steps=steps_per_epoch * min(int(self.lp_epochs), int(self.epochs)),
            policy=policy,
            augment=image_augment(self.augment),
            generator=torch.Generator().manual_seed(seed),
        )
        self.history_, self.best_epoch_ = run_epochs(
            trainer,
            images,
            targets,
            train_idx,
            val_idx,
            epochs=int(self.epochs),
            batch_size=bs,
            verbose=self.verbose,
            patience=int(self.n_iter_no_change) if self.early_stopping else None,
        )
        self.model_ = model.eval()
        self.config_ = dict(config, n_outputs=int(n_outputs))
        self.device_ = policy.device
        self.image_size_ = size
        self.n_epochs_ = len(self.history_)
        self.n_train_, self.n_val_ = int(len(train_idx)), int(len(val_idx))

    def _build_model(self, n_outputs: int, seed: int) -> tuple[LinearHeadNet, dict[str, Any]]:
        state, config, source = resolve_weights(self.weights, self.backbone)
        pooling = self.pooling or config.get("pooling", POOLING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = build_linear_head_net(
                    config["backbone"],
                    n_outputs,
                    mean=config["mean"],
                    std=config["std"],
                    in_chans=int(config.get("in_chans", 3)),
                    pooling=pooling,
                    state=state,
                    source=source,
                )
            except ValueError as exc:
                if source in str(exc):
                    raise
                raise ValueError(f"{source}: {exc}") from exc
        size = int(self.image_size or config["image_size"])
        check_input_size(model.encoder.backbone, config["backbone"], image_size=size)
        config = make_config(
            backbone=config["backbone"],
            embed_dim=embed_dim(model.encoder.backbone),
            image_size=size,
            mean=config["mean"],
            std=config["std"],
            in_chans=int(config.get("in_chans", 3)),
            pooling=pooling,
            training=config.get("training", {}),
            license=config.get("license"),
            intended_use=config.get("intended_use"),
            data=config.get("data"),
            extra={"intensity": config["intensity"]} if config.get("intensity") else None,
        )
        if self.bit_depth is not None:
            config["intensity"] = {**config.get("intensity", {}), "bit_depth": int(self.bit_depth)}
        return model, config

    def _training_images(self, items: Any, size: int, config: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
        """The decoded images that could be read and their positions in ``items``."""
        images, failures, _ = decode_to_tensor(
            items,
            size,
            on_error=self.on_error,
            num_workers=self.num_workers,
            batch_size=int(self.batch_size),
            bit_depth=(config.get("intensity") or {}).get("bit_depth"),
        )
        self.skipped_ = warn_skipped(failures, context=type(self).__name__ + ".fit", consequence="left out of training")
        keep = np.setdiff1d(np.arange(len(items)), [f.index for f in failures])
        if len(keep) == 0:
            raise ValueError(f"no training images: all {len(items)} could not be read")
        return images[torch.as_tensor(keep)], keep

    def _check_trainable(self, targets: torch.Tensor) -> None:
        """Raise on targets that cannot be trained on (subclasses add their own rules)."""

    def _split(self, targets: torch.Tensor, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        """``(train, validation)`` positions; a validation set only with ``early_stopping``, as MLPClassifier."""
        n = len(targets)
        if not self.early_stopping:
            return np.arange(n), np.arange(0)
        from sklearn.model_selection import train_test_split

        n_val = math.ceil(n * float(self.validation_fraction))
        if n_val >= n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training image out of {n}")
        if n_val < self._min_validation:
            raise ValueError(
                f"early_stopping: validation_fraction={self.validation_fraction} of {n} image(s) holds out {n_val}, "
                f"but the validation {self._task().score_name} needs at least {self._min_validation}; raise "
                "validation_fraction, give more images, or set early_stopping=False"
            )
        strat = self._stratify(targets)
        try:
            train, val = train_test_split(np.arange(n), test_size=n_val, stratify=strat, random_state=draw_seed(rng))
        except ValueError as exc:
            raise ValueError(
                f"early_stopping: cannot hold out a stratified validation_fraction={self.validation_fraction} of "
                f"{n} image(s) ({exc}); give more images per class, raise validation_fraction, or set "
                "early_stopping=False"
            ) from exc
        return np.sort(train), np.sort(val)

    # ------------------------------------------------------------------ inference
    def _outputs(self, X: Any) -> np.ndarray:
        """The network's outputs ``(n, n_outputs)`` float32, NaN rows for images skipped (``on_error``)."""
        check_is_fitted(self, "model_")
        items = as_image_list(X)
        out = np.full((len(items), int(self.config_["n_outputs"])), np.nan, dtype=np.float32)
        policy = DevicePolicy(self.device_)

        def collect(y: torch.Tensor, batch: Any) -> None:
            out[batch.index.numpy()] = y.cpu().numpy()

        failures = forward_batches(
            self.model_,
            items,
            self.image_size_,
            collect,
            policy=policy,
            batch_size=int(self.batch_size),
            num_workers=self.num_workers,
            on_error=self.on_error,
            bit_depth=(self.config_.get("intensity") or {}).get("bit_depth"),
        )
        out[[f.index for f in failures]] = np.nan
        warn_skipped(failures, context=type(self).__name__, consequence="NaN rows; the warning's .skipped lists them")
        return out

    # ------------------------------------------------------------------ explanations
    def _explain_outputs(self, target: Any, n: int) -> list[int] | None:  # pragma: no cover - abstract
        """The network output each of ``n`` maps shows (``None``: each image's largest output)."""
        raise NotImplementedError

    def explain(
        self, X: Any, target: Any = None, *, method: str = "gradcam", layer: str | None = None
    ) -> np.ndarray | list[np.ndarray]:
        """Class activation maps: where in each image the evidence for an output lies.

        Grad-CAM (Selvaraju et al. 2017) and its relatives, computed by pytorch-grad-cam
        (the ``explain`` extra: ``pip install "codafeat[explain]"``) on the fine-tuned network.
        A map is the last feature map's channels weighted by the gradient of one output,
        so it shows which regions raised that output: a check that the model uses the anatomy,
        not a hospital's burnt-in marker.

        Parameters
        ----------
        X : folder, sequence of paths / arrays / PIL images, or array (n, h, w[, c])
            The images (all must be readable).
        target : optional
            Whose evidence to show (see the estimator's own docstring); ``None``: the
            prediction (the classifier's predicted class, the regressor's first output).
        method : {"gradcam", "gradcam++", "hirescam", "layercam", "xgradcam", "eigencam"}, default="gradcam"
            The pytorch-grad-cam method.
        layer : str or None, default=None
            The module whose activations are weighed, as a dotted name in ``model_`` (e.g.
            ``"encoder.backbone.stages.2"`` for a finer map); ``None``: the backbone's last
            stage (ConvNeXt's last feature map).

        Returns
        -------
        ndarray of shape (n, h, w), or list of ndarray
            One float32 map in [0, 1] per image, at the image's own size (a list when the
            sizes differ). Draw one with :func:`codafeat.plot.overlay`.
        """
        from .explain import activation_maps

        check_is_fitted(self, "model_")
        items = as_image_list(X)
        maps = activation_maps(
            self.model_,
            items,
            self._explain_outputs(target, len(items)),
            image_size=self.image_size_,
            method=method,
            layer=layer,
            batch_size=int(self.batch_size),
            bit_depth=(self.config_.get("intensity") or {}).get("bit_depth"),
            device=self.device_,
        )
        return np.stack(maps) if len({m.shape for m in maps}) == 1 else maps

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> Weights:
        """The fine-tuned backbone (without the head) as codafeat :class:`~codafeat.formats.weights.Weights`.

        A codafeat file stores timm's own tensor names, so the saved backbone is a timm
        checkpoint too; :class:`~codafeat.CodaEncoder` and the other estimators read it.
        """
        check_is_fitted(self, "model_")
        config = {k: v for k, v in self.config_.items() if k != "n_outputs"}
        training = dict(config.get("training") or {})
        training["fine_tuned"] = {
            "estimator": type(self).__name__,
            "epochs": int(self.n_epochs_),
            "n_train": int(self.n_train_),
            "freeze_encoder": bool(self.freeze_encoder),
        }
        return Weights.from_state(self.model_.encoder.backbone.state_dict(), dict(config, training=training))

    def save(self, path: str | os.PathLike):
        """Write the fine-tuned backbone to a codafeat safetensors file (atomically).

        An existing weights file at ``path`` is replaced; any other existing file (a training
        image, a CSV) is not: ``FileExistsError``.
        """
        check_save_path(path, owner=type(self).__name__)
        return self.get_weights().save(path)

    # ------------------------------------------------------------------ pickling (see codafeat._estimator.persist)
    def _module_config(self, name: str) -> dict[str, Any]:
        return self.config_

    def _restore_module(self, name: str, tensors: dict, config: dict[str, Any], device: torch.device) -> None:
        model = build_linear_head_net(
            config["backbone"],
            int(config["n_outputs"]),
            mean=config["mean"],
            std=config["std"],
            in_chans=int(config.get("in_chans", 3)),
            pooling=config.get("pooling", POOLING),
        )
        model.load_state_dict(tensors, strict=True)
        self.model_ = DevicePolicy(device).module(model).eval()
        self.device_ = device
