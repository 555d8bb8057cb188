"""CodaClassifier: the paper's classification transfer, a linear head with the backbone fine-tuned.

The estimator turns labels into training targets and outputs into predictions; the network
(:mod:`codafeat.nn.linear_head`), the training run (:mod:`codafeat._train.finetune`) and
inference are the shared fine-tuning machinery of :mod:`codafeat._estimator.base`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._estimator.base import LinearHeadFineTuner
from ._estimator.persist import atomic_fit
from ._train.tasks import ClassificationTask, Task
from .data.seg_augment import SegAugment
from .encoder import CodaEncoder
from .formats.weights import Weights


class CodaClassifier(ClassifierMixin, LinearHeadFineTuner):
    """Classify radiographs by fine-tuning a Coda-pretrained (or random) backbone with a linear head.

    The paper's transfer protocol for classification: "appending a task-specific fully
    connected layer to pretrained models" and training the whole network (Coda, Fig. 3 and
    Table 1). The head sits on the pooled backbone features that
    :class:`~codafeat.CodaEncoder` returns; it starts at zero. ``freeze_encoder=True`` trains
    the head alone (a linear probe trained by SGD), and ``lp_epochs`` gives LP-FT: a linear
    probe first, then the whole network (Kumar et al., ICLR 2022), which keeps more of the
    pretrained features when there are few labels.

    A 1-D ``y`` of labels (any type :func:`numpy.unique` sorts) trains a softmax output with a
    cross-entropy; a 2-D 0/1 indicator ``y`` is multi-label, with one sigmoid output and a
    binary cross-entropy per label, as in scikit-learn's ``MLPClassifier``.

    Images are resized to ``image_size`` x ``image_size`` and decoded once, into memory, as
    float16 (``n * image_size**2 * 2`` bytes: 100k images at 224 px take 10 GB).

    Parameters
    ----------
    weights : str, path, Weights, CodaEncoder or None, default=None
        A codafeat safetensors file, the name of installed weights, in-memory
        :class:`~codafeat.formats.weights.Weights`, a timm / hub folder or a plain timm safetensors
        checkpoint (as :class:`~codafeat.CodaEncoder` reads them), a ``CodaEncoder`` (an
        unfitted one is fitted first), or ``None`` for a randomly initialised backbone.
    backbone : str or None, default=None
        timm model name; ``None`` takes it from ``weights`` (``"convnext_base"`` without).
    image_size : int or None, default=None
        Input side; ``None`` takes it from ``weights`` (or 224).
    pooling : {"avg", "max", "avgmax"} or None, default=None
        Global pooling of the last feature map; ``None`` takes it from ``weights`` (or "avg").
    freeze_encoder : bool, default=False
        Train the head only; the backbone stays bit-identical to ``weights``.
    lp_epochs : int, default=0
        Epochs of linear probing (encoder frozen) before the whole network is fine-tuned
        (LP-FT). ``0`` fine-tunes everything from the first step, as the paper does. Must be
        less than ``epochs`` (``fit`` raises otherwise; ``freeze_encoder=True`` trains the
        head only).
    epochs : int, default=20
        Passes over the training images, the linear-probe epochs included (the maximum
        with ``early_stopping``).
    batch_size : int, default=32
        Images per optimiser step (and per forward pass in prediction).
    lr : float, default=1e-3
        Peak learning rate of the head (AdamW; linear warm-up over the first 5 % of the
        steps, then cosine decay to 1 % of the peak on the last step).
    encoder_lr_factor : float, default=0.1
        The backbone's peak learning rate as a fraction of ``lr``.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    augment : bool, dict, SegAugment or None, default=True
        Random affine and intensity changes of each training batch: ``True`` for the
        :class:`~codafeat.data.seg_augment.SegAugment` defaults (scale, rotation, shift,
        contrast, brightness, gamma; no horizontal flip), a dict of its fields, or
        ``False``/``None``.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the cross-entropy, as in scikit-learn (single-label only).
        Every class's weight must be finite and > 0 (``fit`` raises otherwise).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the images (stratified), stop when the
        validation accuracy has not improved for ``n_iter_no_change`` epochs, and keep the
        best epoch's weights.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping (``ceil(n * fraction)`` images).
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    device : str, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    num_workers : int or "auto", default="auto"
        DataLoader workers that decode images (see :class:`~codafeat.CodaEncoder`).
    bit_depth : int or None, default=None
        Fixed bit depth of integer images of more than 8 bits; ``None`` takes the weights'
        rule (see :class:`~codafeat.CodaEncoder`).
    on_error : {"raise", "skip"}, default="raise"
        An unreadable image raises an error naming it, or (``"skip"``) is left out of
        training (its name goes to ``skipped_``) and gets NaN rows in :meth:`predict_proba`
        (named by a :class:`~codafeat.SkippedImagesWarning`).
    random_state : int, RandomState or None, default=None
        Batch order, augmentation and the validation split. The same ``random_state`` gives
        the same model on the CPU.
    verbose : int, default=0
        ``>= 1`` shows a progress bar over epochs.

    Attributes
    ----------
    classes_ : ndarray
        The class labels (multi-label: ``0 .. n_labels - 1``).
    model_ : LinearHeadNet
        The fine-tuned network, in eval mode, on ``device_``.
    config_ : dict
        The backbone's weights config (pooling, input size...) and ``n_outputs``.
    history_ : list of dict
        Per epoch: ``train_loss``, ``val_loss``, ``val_accuracy`` (NaN without early
        stopping), ``lr``, ``encoder_lr``, ``time_s``.
    n_epochs_, best_epoch_ : int, int or None
        Epochs run, and the epoch whose weights were kept (early stopping).
    n_train_, n_val_ : int
        Images trained on and held out.
    skipped_ : list of str
        Images left out of ``fit`` (``on_error="skip"``). Prediction only reads the fitted
        estimator: what it skips is in its warning, not here.

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat import CodaClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((8, 40, 40)).astype(np.float32); X[4:, :20] += 1.0; X /= X.max()
    >>> y = np.array(["normal"] * 4 + ["abnormal"] * 4)
    >>> clf = CodaClassifier(backbone="test_convnext", image_size=32, epochs=2, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X).shape
    (['abnormal', 'normal'], (8, 2))
    """

    _parameter_constraints: dict = {
        **LinearHeadFineTuner._parameter_constraints,
        "class_weight": [None, dict, StrOptions({"balanced"})],
    }

    def __init__(
        self,
        *,
        weights: str | os.PathLike | Weights | CodaEncoder | None = None,
        backbone: str | None = None,
        image_size: int | None = None,
        pooling: str | None = None,
        freeze_encoder: bool = False,
        lp_epochs: int = 0,
        epochs: int = 20,
        batch_size: int = 32,
        lr: float = 1e-3,
        encoder_lr_factor: float = 0.1,
        weight_decay: float = 1e-4,
        augment: bool | dict | SegAugment | None = True,
        class_weight: dict | str | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        device: str = "auto",
        num_workers: int | str = "auto",
        bit_depth: int | None = None,
        on_error: str = "raise",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.weights = weights
        self.backbone = backbone
        self.image_size = image_size
        self.pooling = pooling
        self.freeze_encoder = freeze_encoder
        self.lp_epochs = lp_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_lr_factor = encoder_lr_factor
        self.weight_decay = weight_decay
        self.augment = augment
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.num_workers = num_workers
        self.bit_depth = bit_depth
        self.on_error = on_error
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @atomic_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> CodaClassifier:
        """Fine-tune on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : folder, sequence of paths / arrays / PIL images, or array (n, h, w[, c])
            Training images (see :func:`codafeat.data.io.as_image_list`).
        y : array-like (n,) of labels, or (n, n_labels) 0/1 indicator matrix (multi-label)

        Returns
        -------
        self : CodaClassifier

        Raises
        ------
        ValueError
            Fewer than 2 classes, NaN labels, a count of labels that differs from the
            images, or invalid parameters.
        """
        targets, n_outputs = self._encode(y)
        self._fit(X, targets, n_outputs)
        return self

    def _encode(self, y: Any) -> tuple[torch.Tensor, int]:
        """Training targets from ``y``; sets ``classes_``, ``multilabel_`` and the class weights."""
        if y is None:
            raise ValueError("CodaClassifier.fit needs labels y (one per image)")
        y = np.asarray(y)
        if y.dtype.kind == "f" and np.isnan(y).any():
            rows = np.isnan(y.reshape(len(y), -1)).any(axis=1)
            raise ValueError(
                f"y contains NaN: {int(rows.sum())} row(s), e.g. position(s) {np.flatnonzero(rows)[:10].tolist()}"
            )
        self.multilabel_ = y.ndim == 2 and y.shape[1] > 1
        if self.multilabel_:
            if type_of_target(y) != "multilabel-indicator":
                raise ValueError(
                    f"a 2-D y must be a 0/1 indicator matrix (multi-label), got {type_of_target(y)!r} values"
                )
            if self.class_weight is not None:
                raise ValueError("class_weight is for single-label y; it is not supported with a multi-label y")
            self.classes_ = np.arange(y.shape[1])
            self._class_weight = None
            return torch.as_tensor(y, dtype=torch.float32), y.shape[1]
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"CodaClassifier needs at least 2 classes in y to train on; got only class {self.classes_[0]!r}"
                if len(self.classes_)
                else "CodaClassifier needs at least 2 classes in y; y is empty"
            )
        weights = None  # numpy, not a tensor: no tensor travels in a pickle (codafeat._estimator.persist)
        if self.class_weight is not None:
            weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y).astype(np.float32)
            check_class_weights(weights, self.classes_)
        self._class_weight = weights
        return torch.as_tensor(index, dtype=torch.long), len(self.classes_)

    def _task(self) -> Task:
        weight = None if self._class_weight is None else torch.from_numpy(self._class_weight)
        return ClassificationTask(multilabel=self.multilabel_, class_weight=weight)

    def _stratify(self, targets: torch.Tensor) -> np.ndarray | None:
        return None if self.multilabel_ else targets.numpy()

    def _check_trainable(self, targets: torch.Tensor) -> None:
        if not self.multilabel_ and len(torch.unique(targets)) < 2:
            raise ValueError(
                f"CodaClassifier needs at least 2 classes to train on; after leaving out {len(self.skipped_)} "
                f"unreadable image(s) only class {self.classes_[int(targets[0])]!r} is left"
            )

    def _explain_outputs(self, target: Any, n: int) -> list[int] | None:
        """``target``: ``None`` (each image's predicted class), one label for every image, or one label per image."""
        if target is None:
            return None
        labels = np.asarray(target, dtype=self.classes_.dtype if not self.multilabel_ else None)
        labels = np.full(n, labels.item()) if labels.ndim == 0 else labels
        if len(labels) != n:
            raise ValueError(f"target has {len(labels)} label(s) for {n} image(s); give one, or one per image")
        positions = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(t) for t in labels.tolist() if t not in positions})
        if unknown:
            raise ValueError(
                f"target {unknown} is not a class of this classifier; classes_ are {self.classes_.tolist()}"
            )
        return [positions[t] for t in labels.tolist()]

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``(n, n_classes)``; ``(n,)`` (positive class minus negative) for two classes.

        Rows of images skipped with ``on_error="skip"`` are NaN.
        """
        out = self._outputs(X)
        if not self.multilabel_ and len(self.classes_) == 2:
            return out[:, 1] - out[:, 0]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (per label for multi-label); NaN rows for skipped images."""
        out = torch.from_numpy(self._outputs(X))
        proba = torch.sigmoid(out) if self.multilabel_ else torch.softmax(out, dim=1)
        return proba.numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels ``(n,)``, or a 0/1 indicator matrix for multi-label.

        Images skipped with ``on_error="skip"`` have no prediction: NaN where the labels are
        numbers (the result is then float), ``None`` otherwise (an object array).
        """
        check_is_fitted(self, "model_")
        proba = self.predict_proba(X)
        bad = np.isnan(proba).any(axis=1)
        if self.multilabel_:
            pred = (proba > 0.5).astype(int)
            return pred if not bad.any() else np.where(bad[:, None], np.nan, pred)
        labels = self.classes_[np.nan_to_num(proba, nan=0.0).argmax(axis=1)]
        if not bad.any():
            return labels
        gap = np.nan if self.classes_.dtype.kind in "iufb" else None
        labels = labels.astype(float if gap is not None else object)
        labels[bad] = gap
        return labels


def check_class_weights(weights: np.ndarray, classes: np.ndarray) -> None:
    """Raise ``ValueError`` naming ``class_weight`` for a weight that is not finite and > 0.

    The loss is a mean over the batch weighted by class: a batch of classes of weight 0 would
    divide 0 by 0, and a class of weight 0 is never learned, so every class must weigh more
    than 0 (leave a class out of ``y`` instead).

    Examples
    --------
    >>> check_class_weights(np.array([1.0, 0.5]), np.array(["a", "b"]))
    >>> check_class_weights(np.array([1.0, -2.0]), np.array(["a", "b"]))
    Traceback (most recent call last):
    ...
    ValueError: class_weight gives class 'b' the weight -2.0; every class weight must be finite and > 0 ...
    """
    for c, w in zip(classes.tolist(), weights.tolist()):
        if not np.isfinite(w) or w <= 0:
            raise ValueError(
                f"class_weight gives class {c!r} the weight {float(w)}; every class weight must be finite and > 0 "
                "(to leave a class out, remove its images from X and y)"
            )
