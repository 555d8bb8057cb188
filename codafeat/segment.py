"""CodaSegmenter: fine-tune a U-Net whose encoder is the (Coda-pretrained) backbone."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._device import resolve_device
from ._train.schedules import cosine_schedule
from .data.io import ImageReadError, as_image_list, check_on_error, decode_image, describe, report_skipped
from .data.seg_augment import SegAugment, encode_mask, load_mask, resize_image, resize_mask
from .encoder import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, CodaEncoder
from .metrics import iou
from .nn.backbone import DEFAULT_MEAN, DEFAULT_STD
from .nn.unet import DEFAULT_DECODER_CHANNELS, UNet, build_unet
from .weights import Weights, load_any

logger = logging.getLogger(__name__)

LOSSES = ("ce", "dice", "ce+dice")
_STATE_KEY = "codafeat_segmenter"


class CodaSegmenter(BaseEstimator):
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
        :class:`~codafeat.weights.Weights`, a :class:`~codafeat.CodaEncoder` (its
        ``get_weights()``; an unfitted one is fitted first), or ``None`` for a randomly
        initialised encoder (the baseline).
    backbone : str or None, default=None
        timm model name. ``None`` takes it from ``weights`` (``"convnext_base"`` without
        weights); a name that contradicts ``weights`` is an error.
    image_size : int or None, default=None
        Training/inference side (>= 32); ``None`` takes it from ``weights`` (or 224).
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
        in bfloat16 autocast; the CPU in float32.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image or mask files: raise, or skip them (counted, warned, listed in
        ``skipped_``; :meth:`predict` gives ``None`` for a skipped image).
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
        Items skipped by the last ``fit``/``predict`` (``on_error="skip"``).

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
        "weights": [None, str, os.PathLike, Weights, CodaEncoder],
        "backbone": [None, str],
        "image_size": [None, Interval(Integral, 32, None, closed="left")],
        "n_classes": [Interval(Integral, 2, 256, closed="both")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "encoder_lr": [None, Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "freeze_encoder": ["boolean"],
        "loss": [StrOptions(set(LOSSES))],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "augment": ["boolean", None, dict, SegAugment],
        "decoder_channels": [tuple, list],
        "device": [str, torch.device],
        "on_error": [StrOptions({"raise", "skip"})],
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
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        device: str = "auto",
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
        self.on_error = on_error
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.non_deterministic = True  # CUDA kernels; CPU fits with a fixed random_state repeat
        return tags

    def fit(self, X: Any, Y: Any) -> "CodaSegmenter":
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
        self._validate_params()
        if Y is None:
            raise ValueError("CodaSegmenter.fit needs masks Y (one integer mask per image)")
        augment = SegAugment.from_param(self.augment)
        channels = tuple(int(c) for c in self.decoder_channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"decoder_channels must be 5 positive integers, got {self.decoder_channels!r}")
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))

        state, config, source = self._resolve_weights()
        size = int(self.image_size or config["image_size"])
        config = dict(config, image_size=size, n_classes=int(self.n_classes), decoder_channels=list(channels))

        images, masks, names, skipped = _load_training_pairs(X, Y, size, int(self.n_classes), self.on_error)
        self.skipped_ = skipped
        n = len(images)
        if n == 0:
            raise ValueError("no training images" + (f" ({len(skipped)} unreadable, skipped)" if skipped else ""))
        _warn_label_content(masks, names, int(self.n_classes))

        n_val = int(math.floor(n * float(self.validation_fraction)))
        if n_val >= n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training image out of {n}")
        if self.early_stopping and n_val == 0:
            raise ValueError(
                f"early_stopping needs a validation set, but validation_fraction={self.validation_fraction} "
                f"of {n} image(s) holds out none; raise validation_fraction or set early_stopping=False"
            )
        order = rng.permutation(n)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

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
        model = _to_device(model, device)
        gen = torch.Generator().manual_seed(seed)
        result = _train(
            model,
            images[train_idx],
            masks[train_idx],
            images[val_idx] if n_val else None,
            masks[val_idx] if n_val else None,
            params=self,
            augment=augment,
            device=device,
            generator=gen,
        )
        model.eval()
        self.model_ = model
        self.config_ = config
        self.device_ = device
        self.image_size_ = size
        self.classes_ = np.arange(int(self.n_classes))
        self.history_ = result["history"]
        self.n_epochs_ = len(self.history_)
        self.best_epoch_ = result["best_epoch"]
        self.n_train_ = int(len(train_idx))
        self.n_val_ = int(n_val)
        return self

    def _resolve_weights(self) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any], str]:
        spec = self.weights
        if spec is None:
            name = self.backbone or DEFAULT_BACKBONE
            config = {
                "backbone": name,
                "image_size": DEFAULT_IMAGE_SIZE,
                "in_chans": 3,
                "mean": list(DEFAULT_MEAN),
                "std": list(DEFAULT_STD),
                "training": {"init": "random"},
            }
            return None, config, "random initialisation"
        if isinstance(spec, CodaEncoder):
            enc = spec if hasattr(spec, "model_") else clone(spec).fit()
            spec = enc.get_weights()
        state, config, source = load_any(spec)
        if self.backbone is not None and self.backbone != config["backbone"]:
            raise ValueError(
                f"backbone={self.backbone!r} contradicts the weights {source!r}, which hold a "
                f"{config['backbone']!r}; leave backbone=None to use the weights' backbone"
            )
        return state, dict(config), source

    # ------------------------------------------------------------------ inference
    def _logits(self, X: Any):
        """Yield ``(index, logits (n_classes, h, w) float32 at the original size)``; ``None`` for skipped."""
        check_is_fitted(self, "model_")
        items = as_image_list(X)
        check_on_error(self.on_error)
        self.skipped_ = []
        dev = self.device_
        size = self.image_size_
        use_amp = dev.type == "cuda"
        for start in range(0, len(items), self.batch_size):
            batch, shapes, idx = [], [], []
            for i in range(start, min(start + self.batch_size, len(items))):
                try:
                    img = decode_image(items[i], index=i)
                except ImageReadError:
                    if self.on_error == "raise":
                        raise
                    self.skipped_.append(describe(items[i], i))
                    yield i, None
                    continue
                shapes.append(img.shape)
                batch.append(resize_image(img, size))
                idx.append(i)
            if not batch:
                continue
            x = torch.from_numpy(np.stack(batch)).unsqueeze(1).to(dev)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = self.model_(x)
            with torch.inference_mode():
                logits = logits.float()
                for j, (i, shape) in enumerate(zip(idx, shapes)):
                    out = logits[j : j + 1]
                    if tuple(shape) != tuple(out.shape[-2:]):
                        out = F.interpolate(out, size=tuple(shape), mode="bilinear", align_corners=False)
                    yield i, out[0]

    def _collect(self, X: Any, convert) -> np.ndarray | list:
        results: dict[int, Any] = {}
        for i, logits in self._logits(X):
            results[i] = None if logits is None else convert(logits)
        out = [results[i] for i in range(len(results))]
        if self.skipped_:
            report_skipped(self.skipped_, context="CodaSegmenter")
            warnings.warn(
                f"CodaSegmenter skipped {len(self.skipped_)} unreadable image(s) (None in the result): "
                + ", ".join(self.skipped_[:5])
                + (" ..." if len(self.skipped_) > 5 else ""),
                UserWarning,
                stacklevel=3,
            )
            return out
        if out and all(o.shape == out[0].shape for o in out):
            return np.stack(out)
        return out

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
        mask_items = _as_mask_items(Y)
        _check_counts(items, mask_items)
        pred = self.predict(items)
        if self.skipped_:
            raise ValueError(f"cannot score: {len(self.skipped_)} image(s) could not be read: {self.skipped_[:5]}")
        true = []
        for i in range(len(mask_items)):
            raw = load_mask(mask_items[i], index=i)
            true.append(encode_mask(raw, int(self.n_classes), name=describe(mask_items[i], i)))
            if true[-1].shape != pred[i].shape:
                raise ValueError(
                    f"image {describe(items[i], i)} is {_hw(pred[i].shape)} but its mask "
                    f"{describe(mask_items[i], i)} is {_hw(true[-1].shape)}"
                )
        return float(iou(true, list(pred), labels=range(1, int(self.n_classes))))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
            state["_model_bytes"] = st_save(tensors, metadata={_STATE_KEY: json.dumps(self.config_, sort_keys=True)})
            state.pop("device_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        data = state.pop("_model_bytes", None)
        self.__dict__.update(state)
        if data is None:
            return
        tensors = st_load(data)
        config = self.__dict__.get("config_") or {}
        model = build_unet(
            config["backbone"],
            int(config["n_classes"]),
            mean=config["mean"],
            std=config["std"],
            in_chans=int(config.get("in_chans", 3)),
            decoder_channels=config["decoder_channels"],
        )
        model.load_state_dict(tensors, strict=True)
        try:
            device = resolve_device(self.device)
        except ValueError:
            logger.warning("device %r is not available after unpickling; using the CPU", self.device)
            device = torch.device("cpu")
        self.model_ = _to_device(model, device).eval()
        self.device_ = device


# --------------------------------------------------------------------------- data
def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _as_mask_items(Y: Any) -> Sequence[Any]:
    if isinstance(Y, np.ndarray) and Y.ndim == 2:
        raise ValueError(f"Y must hold one mask per image: an array (n, h, w) or a list of masks; got shape {Y.shape}")
    if isinstance(Y, torch.Tensor):
        Y = Y.detach().cpu().numpy()
    return as_image_list(Y)


def _check_counts(items: Sequence[Any], mask_items: Sequence[Any]) -> None:
    if len(items) != len(mask_items):
        raise ValueError(f"X has {len(items)} image(s) but Y has {len(mask_items)} mask(s); give one mask per image")


def _load_training_pairs(
    X: Any, Y: Any, size: int, n_classes: int, on_error: str
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Images ``(n, 1, size, size)`` float32 and masks ``(n, size, size)`` uint8, resized together."""
    items = as_image_list(X)
    mask_items = _as_mask_items(Y)
    _check_counts(items, mask_items)
    imgs: list[np.ndarray] = []
    msks: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for i in range(len(items)):
        name, mname = describe(items[i], i), describe(mask_items[i], i)
        try:
            img = decode_image(items[i], index=i)
            raw = load_mask(mask_items[i], index=i)
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            skipped.append(exc.path)
            continue
        if img.shape != raw.shape:
            raise ValueError(
                f"image {name} is {_hw(img.shape)} but its mask {mname} is {_hw(raw.shape)} (pair {i}); "
                "an image and its mask must have the same size"
            )
        mask = encode_mask(raw, n_classes, name=mname)
        imgs.append(resize_image(img, size))
        msks.append(resize_mask(mask, size))
        names.append(mname)
    report_skipped(skipped, context="CodaSegmenter.fit")
    if skipped:
        warnings.warn(
            f"CodaSegmenter.fit skipped {len(skipped)} unreadable image/mask pair(s): " + ", ".join(skipped[:5]),
            UserWarning,
            stacklevel=3,
        )
    if not imgs:
        return torch.empty(0, 1, size, size), torch.empty(0, size, size, dtype=torch.uint8), names, skipped
    images = torch.from_numpy(np.stack(imgs)).unsqueeze(1)
    masks = torch.from_numpy(np.stack(msks))
    return images, masks, names, skipped


def _warn_label_content(masks: torch.Tensor, names: list[str], n_classes: int) -> None:
    fg = (masks > 0).flatten(1).any(dim=1).numpy()
    empty = [names[i] for i in np.flatnonzero(~fg)]
    if empty:
        what = "all" if len(empty) == len(names) else f"{len(empty)} of {len(names)}"
        warnings.warn(
            f"{what} training masks are all background (no pixel of class >= 1) at the training size, "
            f"e.g. {empty[:3]}; check the masks (binary masks must be 0/1, or 0/255 with n_classes=2)",
            UserWarning,
            stacklevel=3,
        )
    present = set(torch.unique(masks).tolist())
    absent = [c for c in range(1, n_classes) if c not in present]
    if absent and len(empty) < len(names):
        warnings.warn(
            f"class(es) {absent} never appear in the training masks (n_classes={n_classes})",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- training
def _to_device(model: UNet, device: torch.device) -> UNet:
    if device.type == "cuda":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the foreground classes, pooled over the batch.

    ``1 - mean_c (2 sum(p_c y_c) + eps) / (sum p_c + sum y_c + eps)`` for ``c >= 1``, with
    ``p`` the softmax of ``logits`` ``(B, C, H, W)`` and ``y`` the one-hot ``target``
    ``(B, H, W)``. Pooling over the batch keeps it defined for images without foreground.
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``"ce"``, ``"dice"`` (:func:`dice_loss`) or ``"ce+dice"`` (their sum)."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    total = logits.new_zeros((), dtype=torch.float32)
    if "ce" in kind.split("+"):
        total = total + F.cross_entropy(logits.float(), target.long())
    if "dice" in kind.split("+"):
        total = total + dice_loss(logits, target)
    return total


def _evaluate(model: UNet, images: torch.Tensor, masks: torch.Tensor, *, kind: str, n_classes: int, batch_size: int, device: torch.device) -> tuple[float, float]:
    model.eval()
    use_amp = device.type == "cuda"
    losses, preds = [], []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size].to(device)
            y = masks[s : s + batch_size].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            losses.append(float(segmentation_loss(logits, y, kind)) * len(x))
            preds.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    pred = np.concatenate(preds)
    score = iou(masks.numpy(), pred, labels=range(1, n_classes))
    return sum(losses) / len(images), float(score)


def _train(
    model: UNet,
    images: torch.Tensor,
    masks: torch.Tensor,
    val_images: torch.Tensor | None,
    val_masks: torch.Tensor | None,
    *,
    params: CodaSegmenter,
    augment: SegAugment | None,
    device: torch.device,
    generator: torch.Generator,
) -> dict[str, Any]:
    n = len(images)
    bs = min(int(params.batch_size), n)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * int(params.epochs)
    enc_lr = float(params.lr) / 10 if params.encoder_lr is None else float(params.encoder_lr)
    warmup = total // 20
    lr_sched = cosine_schedule(1.0, 0.01, total, warmup_steps=warmup, warmup_start=1.0 / (warmup + 1))

    if params.freeze_encoder:
        model.encoder.requires_grad_(False)
    groups = [{"params": [p for p in model.decoder.parameters()], "lr": float(params.lr), "base_lr": float(params.lr)}]
    if not params.freeze_encoder:
        groups.append({"params": [p for p in model.encoder.parameters()], "lr": enc_lr, "base_lr": enc_lr})
    opt = torch.optim.AdamW(groups, weight_decay=float(params.weight_decay))
    trainable = [p for g in groups for p in g["params"]]
    use_amp = device.type == "cuda"
    n_classes = int(params.n_classes)
    history: list[dict[str, Any]] = []
    best = (-math.inf, None, None)  # (val iou, epoch, state)
    stale = 0
    step = 0
    epochs = range(1, int(params.epochs) + 1)
    bar = None
    if params.verbose:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc="fine-tuning", unit="epoch")
        epochs = bar
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        if params.freeze_encoder:
            model.encoder.eval()
        perm = torch.randperm(n, generator=generator)
        loss_sum = 0.0
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            x = images[idx].to(device, non_blocking=True)
            y = masks[idx].to(device, non_blocking=True)
            if augment is not None:
                x, y = augment(x, y, generator=generator)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * float(lr_sched[step])
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = segmentation_loss(logits, y, params.loss)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch}, step {step}; lower lr / encoder_lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, max_norm=1.0)
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            step += 1
        rec: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "val_loss": float("nan"),
            "val_iou": float("nan"),
            "lr": opt.param_groups[0]["lr"],
            "encoder_lr": 0.0 if params.freeze_encoder else opt.param_groups[1]["lr"],
        }
        if val_images is not None:
            rec["val_loss"], rec["val_iou"] = _evaluate(
                model, val_images, val_masks, kind=params.loss, n_classes=n_classes, batch_size=bs, device=device
            )
        rec["time_s"] = time.perf_counter() - t0
        history.append(rec)
        logger.debug("epoch %d: %s", epoch, rec)
        if bar is not None:
            postfix = {"loss": f"{rec['train_loss']:.4f}"}
            if not math.isnan(rec["val_iou"]):
                postfix["val_iou"] = f"{rec['val_iou']:.3f}"
            bar.set_postfix(postfix)
        if params.early_stopping:
            if rec["val_iou"] > best[0] + 1e-4:
                best = (rec["val_iou"], epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
                stale = 0
            else:
                stale += 1
                if stale >= int(params.n_iter_no_change):
                    logger.info("early stopping at epoch %d (best epoch %d)", epoch, best[1])
                    break
    if params.early_stopping and best[2] is not None:
        model.load_state_dict(best[2])
    return {"history": history, "best_epoch": best[1] if params.early_stopping else None}
