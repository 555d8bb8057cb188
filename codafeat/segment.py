"""CodaSegmenter: fine-tune a U-Net whose encoder is the (Coda-pretrained) backbone.

The estimator validates its parameters, reads the image/mask pairs
(:mod:`codafeat.data.seg_pairs`), builds the U-Net (:mod:`codafeat.nn.unet`), and hands
training to the shared fine-tuning trainer (:class:`~codafeat._train.finetune.FineTuneTrainer`
with a :class:`~codafeat._train.tasks.SegmentationTask`) and inference to the shared
streaming loop (:func:`codafeat._estimator.infer.stream_batches`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._defaults import DECODER_CHANNELS, POOLING
from ._device import DevicePolicy
from ._estimator.base import ENCODER_LIKE, fine_tuning_tags, resolve_weights, run_epochs
from ._estimator.infer import forward_batches, warn_skipped
from ._estimator.params import BATCH_SIZE, DEVICE, IMAGE_SIDE, NUM_WORKERS, ON_ERROR, draw_seed
from ._estimator.persist import TorchStateMixin, atomic_fit
from ._train.finetune import FineTuneTrainer
from ._train.tasks import SegmentationTask
from .data.io import as_image_list, describe
from .data.seg_augment import SegAugment, encode_mask, load_mask
from .data.seg_pairs import as_mask_items, check_counts, hw, load_training_pairs, warn_label_content
from .encoder import CodaEncoder
from .formats.weights import Weights, make_config
from .losses.segmentation import LOSSES, dice_loss, segmentation_loss  # noqa: F401  (re-exported since 0.1)
from .metrics import iou
from .nn.backbone import check_input_size
from .nn.unet import UNet, build_unet, encoder_channels

logger = logging.getLogger(__name__)


class CodaSegmenter(TorchStateMixin, BaseEstimator):
    """Segment radiographs with a U-Net whose encoder starts from Coda (or random) weights.

    The paper's transfer protocol: the encoder is the pretrained backbone as a feature
    pyramid (timm ``features_only``, strides 4/8/16/32), the decoder is randomly
    initialised (see :mod:`codafeat.nn.unet`), and the whole network is fine-tuned
    (or only the decoder, with ``freeze_encoder=True``).

    Images and masks are resized together to ``image_size`` x ``image_size`` for
    training (masks by nearest neighbour); :meth:`predict` returns masks at each input
    image's original size. Mask values are class indices ``0 .. n_classes-1``; with
    ``n_classes=2``, masks holding only 0 and 255 (binary PNGs) read 255 as class 1 (see
    :mod:`codafeat.data.seg_augment`).

    Parameters
    ----------
    weights : str, path, Weights, CodaEncoder or None, default=None
        A codafeat safetensors file, the name of installed weights, in-memory
        :class:`~codafeat.formats.weights.Weights`, a timm / hub folder or a plain timm
        safetensors checkpoint (as :class:`~codafeat.CodaEncoder` reads them), a
        :class:`~codafeat.CodaEncoder` (its ``get_weights()``; an unfitted one is fitted
        first), or ``None`` for a randomly initialised encoder (the baseline).
    backbone : str or None, default=None
        timm model name. ``None`` takes it from ``weights`` (``"convnext_base"`` without
        weights); a name that contradicts ``weights`` is an error.
    image_size : int or None, default=None
        Training/inference side (at least the backbone's total stride, 32 for ConvNeXt);
        ``None`` takes it from ``weights`` (or 224).
    n_classes : int, default=2
        Number of classes including the background (class 0).
    epochs : int, default=50
        Passes over the training images (the maximum with ``early_stopping``).
    batch_size : int, default=8
        Images per optimiser step.
    lr : float, default=1e-3
        Peak learning rate of the decoder (AdamW; linear warm-up over the first 5 % of
        the steps, then cosine decay to 1 % of the peak on the last step).
    encoder_lr : float or None, default=None
        Peak learning rate of the encoder; ``None`` means ``lr / 10``.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    freeze_encoder : bool, default=False
        Train only the decoder; the encoder stays exactly as loaded (and in eval mode).
    loss : {"ce+dice", "ce", "dice"}, default="ce+dice"
        Pixel cross-entropy, soft Dice over the foreground classes, or their sum.
    validation_fraction : float, default=0.1
        Fraction of the images held out (``floor(n * fraction)``) to report validation
        loss and IoU in ``history_`` (and for early stopping). ``0`` trains on all.
    early_stopping : bool, default=False
        Stop when the validation IoU has not improved for ``n_iter_no_change`` epochs
        and restore the best epoch's weights. Needs a non-empty validation set.
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    augment : bool, dict, SegAugment or None, default=True
        Joint image/mask augmentation during training: ``True`` for
        :class:`~codafeat.data.seg_augment.SegAugment` defaults (scale, rotation,
        shift, contrast, brightness, gamma; no horizontal flip), a dict of its fields,
        or ``False``/``None`` for none.
    decoder_channels : tuple of 5 int, default=(256, 128, 64, 32, 16)
        Decoder widths at strides 16, 8, 4, 2, 1.
    device : str, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``. CUDA runs
        in bfloat16 autocast; the CPU in float32 (see :mod:`codafeat._device`).
    num_workers : int or "auto", default="auto"
        DataLoader workers decoding images for :meth:`predict` (as
        :class:`~codafeat.CodaEncoder`'s ``num_workers``).
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image or mask files: raise, or skip them (counted and warned; ``fit``
        lists them in ``skipped_``; :meth:`predict` gives ``None`` for a skipped image and
        warns with a :class:`~codafeat.SkippedImagesWarning` naming it).
    random_state : int, RandomState or None, default=None
        Seeds the decoder (and, without weights, encoder) initialisation, the
        validation split, the batch order and the augmentation.
    verbose : int, default=0
        ``>= 1`` shows a progress bar over epochs.

    Attributes
    ----------
    model_ : codafeat.nn.unet.UNet
        The fine-tuned network, in eval mode, on ``device_``.
    config_ : dict
        Weights config plus the segmentation settings (``n_classes``, ``decoder_channels``).
    classes_ : ndarray of shape (n_classes,)
        ``0 .. n_classes-1``.
    image_size_ : int
        Side used for training and inference.
    device_ : torch.device
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_iou`` (NaN without a
        validation set), ``lr``, ``encoder_lr`` (at the epoch's last step), ``time_s``.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int or None
        Epoch whose weights were kept (early stopping), else ``None``.
    n_train_, n_val_ : int
        Images used for training / validation.
    skipped_ : list of str
        Items skipped by ``fit`` (``on_error="skip"``). Prediction only reads the fitted
        segmenter: what it skips is in its warning, not here.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat.segment import CodaSegmenter
    >>> rng = np.random.default_rng(0)
    >>> masks = np.zeros((4, 40, 40), dtype=np.uint8); masks[:, 10:30, 12:28] = 1
    >>> images = (masks * 0.6 + 0.2 * rng.random((4, 40, 40))).astype(np.float32)
    >>> seg = CodaSegmenter(backbone="test_convnext", image_size=32, epochs=2,
    ...                     validation_fraction=0, random_state=0).fit(images, masks)
    >>> seg.predict(images).shape
    (4, 40, 40)
    """

    _parameter_constraints: dict = {
        "weights": [None, str, os.PathLike, Weights, ENCODER_LIKE],
        "backbone": [None, str],
        "image_size": [None, IMAGE_SIDE],
        "n_classes": [Interval(Integral, 2, 256, closed="both")],
        "epochs": [Interval(Integral, 1, 1_000_000, closed="both")],
        "batch_size": BATCH_SIZE,
        "lr": [Interval(Real, 0, 1, closed="right")],
        "encoder_lr": [None, Interval(Real, 0, 1, closed="both")],
        "weight_decay": [Interval(Real, 0, 10, closed="both")],
        "freeze_encoder": ["boolean"],
        "loss": [StrOptions(set(LOSSES))],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, 1_000_000, closed="both")],
        "augment": ["boolean", None, dict, SegAugment],
        "decoder_channels": [tuple, list],
        "device": DEVICE,
        "num_workers": NUM_WORKERS,
        "on_error": ON_ERROR,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        weights: str | os.PathLike | Weights | CodaEncoder | None = None,
        backbone: str | None = None,
        image_size: int | None = None,
        n_classes: int = 2,
        epochs: int = 50,
        batch_size: int = 8,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 1e-4,
        freeze_encoder: bool = False,
        loss: str = "ce+dice",
        validation_fraction: float = 0.1,
        early_stopping: bool = False,
        n_iter_no_change: int = 10,
        augment: bool | dict | SegAugment | None = True,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        device: str = "auto",
        num_workers: int | str = "auto",
        on_error: str = "raise",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.weights = weights
        self.backbone = backbone
        self.image_size = image_size
        self.n_classes = n_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.freeze_encoder = freeze_encoder
        self.loss = loss
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.augment = augment
        self.decoder_channels = decoder_channels
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        return fine_tuning_tags(super().__sklearn_tags__())

    @atomic_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, Y: Any) -> CodaSegmenter:
        """Build the U-Net from ``weights`` and fine-tune it on images ``X`` and masks ``Y``.

        Parameters
        ----------
        X : folder, sequence of paths / arrays / PIL images, or array (n, h, w[, c])
            Training images (see :func:`codafeat.data.io.as_image_list`).
        Y : array (n, h, w), sequence of 2-D arrays / mask files, or a folder
            Integer masks paired with ``X`` by position, each the size of its image.

        Returns
        -------
        self : CodaSegmenter

        Raises
        ------
        ValueError
            Different numbers of images and masks, an image and mask of different sizes,
            label values outside ``[0, n_classes)``, or invalid parameters.
        """
        if Y is None:
            raise ValueError("CodaSegmenter.fit needs masks Y (one integer mask per image)")
        augment = SegAugment.from_param(self.augment)
        channels = tuple(int(c) for c in self.decoder_channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"decoder_channels must be 5 positive integers, got {self.decoder_channels!r}")
        policy = DevicePolicy.for_device(self.device)
        rng = check_random_state(self.random_state)
        seed = draw_seed(rng)
        state, config, source = resolve_weights(self.weights, self.backbone)
        size = int(self.image_size or config["image_size"])
        model = self._build_model(config, state, source, channels, seed, size)

        depth = (config.get("intensity") or {}).get("bit_depth")  # the weights' intensity rule, kept
        images, masks, names, self.skipped_ = load_training_pairs(
            X, Y, size, int(self.n_classes), self.on_error, bit_depth=depth
        )
        if len(images) == 0:
            raise ValueError(
                "no training images" + (f" ({len(self.skipped_)} unreadable, skipped)" if self.skipped_ else "")
            )
        warn_label_content(masks, names, int(self.n_classes))
        train_idx, val_idx = self._split(len(images), rng)

        model = policy.module(model)
        bs = min(int(self.batch_size), len(train_idx))
        trainer = self._trainer(
            model, policy, augment, steps=math.ceil(len(train_idx) / bs) * int(self.epochs), seed=seed
        )
        self.history_, best_epoch = run_epochs(
            trainer,
            images,
            masks,
            train_idx,
            val_idx,
            epochs=int(self.epochs),
            batch_size=bs,
            verbose=self.verbose,
            patience=int(self.n_iter_no_change) if self.early_stopping else None,
        )
        self.model_ = model.eval()
        self.config_ = self._fitted_config(config, model, size, channels)
        self.device_ = policy.device
        self.image_size_ = size
        self.classes_ = np.arange(int(self.n_classes))
        self.n_epochs_ = len(self.history_)
        self.best_epoch_ = best_epoch
        self.n_train_, self.n_val_ = int(len(train_idx)), int(len(val_idx))
        return self

    def _trainer(self, model: Any, policy: DevicePolicy, augment: Any, *, steps: int, seed: int) -> FineTuneTrainer:
        lr = float(self.lr)
        return FineTuneTrainer(
            model,
            encoder=model.encoder,
            task=SegmentationTask(int(self.n_classes), self.loss),
            lr=lr,
            encoder_lr=lr / 10 if self.encoder_lr is None else float(self.encoder_lr),
            weight_decay=float(self.weight_decay),
            freeze_encoder=bool(self.freeze_encoder),
            total_steps=steps,
            policy=policy,
            augment=augment,
            generator=torch.Generator().manual_seed(seed),
        )

    def _fitted_config(
        self, config: dict[str, Any], model: Any, size: int, channels: tuple[int, ...]
    ) -> dict[str, Any]:
        """The config the fitted segmenter records (and pickles): the weights' plus the decoder's."""
        return make_config(
            backbone=config["backbone"],
            embed_dim=encoder_channels(model.encoder)[-1],
            image_size=size,
            mean=config["mean"],
            std=config["std"],
            in_chans=int(config.get("in_chans", 3)),
            pooling=config.get("pooling", POOLING),
            training=config.get("training", {}),
            extra={
                "n_classes": int(self.n_classes),
                "decoder_channels": list(channels),
                **({"intensity": config["intensity"]} if config.get("intensity") else {}),
            },
        )

    def _split(self, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        """``(train, validation)`` positions: ``floor(n * validation_fraction)`` held out."""
        n_val = int(math.floor(n * float(self.validation_fraction)))
        if n_val >= n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training image out of {n}")
        if self.early_stopping and n_val == 0:
            raise ValueError(
                f"early_stopping needs a validation set, but validation_fraction={self.validation_fraction} "
                f"of {n} image(s) holds out none; raise validation_fraction or set early_stopping=False"
            )
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _build_model(
        self, config: dict[str, Any], state: dict | None, source: str, channels: tuple[int, ...], seed: int, size: int
    ) -> UNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_unet(
                config["backbone"],
                int(self.n_classes),
                mean=config["mean"],
                std=config["std"],
                in_chans=int(config.get("in_chans", 3)),
                state=state,
                source=source,
                decoder_channels=channels,
            )
        check_input_size(model.encoder, config["backbone"], image_size=size)
        return model

    # ------------------------------------------------------------------ inference
    def _collect(self, X: Any, convert: Any) -> np.ndarray | list:
        """``convert(logits (n_classes, h, w))`` of every image at its original size, in input order."""
        check_is_fitted(self, "model_")
        items = as_image_list(X)
        policy = DevicePolicy(self.device_)
        results: list[Any] = [None] * len(items)

        def collect(logits: torch.Tensor, batch: Any) -> None:
            failed = {f.index for f in batch.failures}
            for j, (i, shape) in enumerate(zip(batch.index.tolist(), batch.shapes.tolist())):
                if i in failed:
                    continue
                out = logits[j : j + 1]
                if tuple(shape) != tuple(out.shape[-2:]):
                    out = F.interpolate(out, size=tuple(shape), mode="bilinear", align_corners=False)
                results[i] = convert(out[0])

        failures = forward_batches(
            self.model_,
            items,
            self.image_size_,
            collect,
            policy=policy,
            batch_size=int(self.batch_size),
            num_workers=self.num_workers,
            on_error=self.on_error,
            with_shapes=True,
            bit_depth=(self.config_.get("intensity") or {}).get("bit_depth"),
        )
        skipped = warn_skipped(failures, context="CodaSegmenter", consequence="None in the result")
        if skipped or not results or any(r.shape != results[0].shape for r in results):
            return results
        return np.stack(results)

    def predict(self, X: Any) -> np.ndarray | list[np.ndarray]:
        """Label masks at each image's original size.

        Returns
        -------
        ndarray (n, h, w) of uint8 when all images have the same size, else a list of
        ``(h_i, w_i)`` uint8 arrays (``None`` for images skipped with ``on_error="skip"``).
        """
        return self._collect(X, lambda lg: lg.argmax(0).to(torch.uint8).cpu().numpy())

    def predict_proba(self, X: Any) -> np.ndarray | list[np.ndarray]:
        """Class probabilities at each image's original size.

        Returns
        -------
        ndarray (n, n_classes, h, w) of float32 when all images have the same size, else
        a list of ``(n_classes, h_i, w_i)`` arrays.
        """
        return self._collect(X, lambda lg: torch.softmax(lg, dim=0).cpu().numpy())

    def score(self, X: Any, Y: Any, sample_weight: Any = None) -> float:
        """Mean IoU over the foreground classes (1 .. n_classes-1), averaged over images.

        Masks follow the same rules as in :meth:`fit`; a class absent from both the true
        and the predicted mask of an image counts as 1 for that image.
        """
        if sample_weight is not None:
            raise ValueError("CodaSegmenter.score does not support sample_weight")
        check_is_fitted(self, "model_")
        items = as_image_list(X)
        mask_items = as_mask_items(Y)
        check_counts(items, mask_items)
        pred = self.predict(items)
        missing = [i for i, p in enumerate(pred) if p is None]
        if missing:
            names = [
                str(items[i]) if isinstance(items[i], (str, os.PathLike)) else f"<image at index {i}>"
                for i in missing[:5]
            ]
            raise ValueError(f"cannot score: {len(missing)} image(s) could not be read: {names}")
        true = []
        for i in range(len(mask_items)):
            raw = load_mask(mask_items[i], index=i)
            true.append(encode_mask(raw, int(self.n_classes), name=describe(mask_items[i], i)))
            if true[-1].shape != pred[i].shape:
                raise ValueError(
                    f"image {describe(items[i], i)} is {hw(pred[i].shape)} but its mask "
                    f"{describe(mask_items[i], i)} is {hw(true[-1].shape)}"
                )
        return float(iou(true, list(pred), labels=range(1, int(self.n_classes))))

    # ------------------------------------------------------------------ pickling (see codafeat._estimator.persist)
    def _module_config(self, name: str) -> dict[str, Any]:
        return self.config_

    def _restore_module(self, name: str, tensors: dict, config: dict[str, Any], device: torch.device) -> None:
        model = build_unet(
            config["backbone"],
            int(config["n_classes"]),
            mean=config["mean"],
            std=config["std"],
            in_chans=int(config.get("in_chans", 3)),
            decoder_channels=config["decoder_channels"],
        )
        model.load_state_dict(tensors, strict=True)
        self.model_ = DevicePolicy(device).module(model).eval()
        self.device_ = device
