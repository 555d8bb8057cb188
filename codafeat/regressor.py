"""CodaRegressor: continuous targets (bone age, a severity score) from a fine-tuned backbone.

The same network and training machinery as :class:`~codafeat.CodaClassifier`
(:mod:`codafeat._estimator.base`), with a linear output per target and a mean squared error on
standardised targets.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

from ._estimator.base import LinearHeadFineTuner
from ._estimator.persist import atomic_fit
from ._train.tasks import RegressionTask, Task
from .data.seg_augment import SegAugment
from .encoder import CodaEncoder
from .formats.weights import Weights


class CodaRegressor(RegressorMixin, LinearHeadFineTuner):
    """Predict continuous targets by fine-tuning a Coda-pretrained (or random) backbone with a linear head.

    ``y`` of shape ``(n,)`` gives one output, ``(n, k)`` gives ``k`` outputs (as scikit-learn's
    multi-output regressors). The targets are standardised for training (each column to
    mean 0, standard deviation 1; a constant column keeps scale 1), so ``lr`` does not depend
    on their units, and predictions are in the original units. ``score`` is R².

    Parameters
    ----------
    weights, backbone, image_size, pooling, freeze_encoder, lp_epochs, epochs, batch_size, lr, \
encoder_lr_factor, weight_decay, augment, device, num_workers, bit_depth, on_error, random_state, verbose
        As in :class:`~codafeat.CodaClassifier`.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the images, stop when the validation R² has not
        improved for ``n_iter_no_change`` epochs, and keep the best epoch's weights.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping (``ceil(n * fraction)`` images).
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.

    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
    y_mean_, y_scale_ : ndarray (n_outputs,)
        The standardisation of the targets.
    model_, config_, history_, n_epochs_, best_epoch_, n_train_, n_val_, skipped_
        As in :class:`~codafeat.CodaClassifier` (the history has ``val_r2``).

    Examples
    --------
    >>> import numpy as np
    >>> from codafeat import CodaRegressor
    >>> rng = np.random.default_rng(0)
    >>> y = np.linspace(0, 1, 8)
    >>> X = (0.3 * rng.random((8, 40, 40)) + 0.6 * y[:, None, None]).astype(np.float32)
    >>> reg = CodaRegressor(backbone="test_convnext", image_size=32, epochs=2, random_state=0).fit(X, 100 * y)
    >>> reg.predict(X).shape
    (8,)
    """

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
        tags.target_tags.multi_output = True
        return tags

    @atomic_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> CodaRegressor:
        """Fine-tune on images ``X`` with targets ``y`` of shape ``(n,)`` or ``(n, n_outputs)``.

        Returns
        -------
        self : CodaRegressor

        Raises
        ------
        ValueError
            Non-numeric, NaN or infinite targets, a count of targets that differs from the
            images, or invalid parameters.
        """
        if y is None:
            raise ValueError("CodaRegressor.fit needs targets y (one per image)")
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"CodaRegressor needs numeric targets y: {exc}") from exc
        if y.ndim not in (1, 2) or len(y) == 0:
            raise ValueError(f"y must have shape (n,) or (n, n_outputs) with n >= 1, got {y.shape}")
        bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"y contains NaN or infinite values: {int(bad.sum())} row(s), "
                f"e.g. position(s) {np.flatnonzero(bad)[:10].tolist()}"
            )
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self.y_mean_, self.y_scale_ = standardisation(y2)
        targets = torch.as_tensor((y2 - self.y_mean_) / self.y_scale_, dtype=torch.float32)
        self._fit(X, targets, self.n_outputs_)
        return self

    def _explain_outputs(self, target: Any, n: int) -> list[int]:
        """``target``: the output whose evidence to show (an int in ``[0, n_outputs_)``; ``None``: 0)."""
        j = 0 if target is None else target
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= int(j) < self.n_outputs_:
            raise ValueError(f"target must be an output index in [0, {self.n_outputs_}), got {target!r}")
        return [int(j)] * n

    # R² of one image is undefined (sklearn's r2_score gives NaN): early stopping needs two.
    _min_validation = 2

    def _task(self) -> Task:
        return RegressionTask()

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(n,)`` or ``(n, n_outputs)``, as ``y`` in :meth:`fit`; NaN for skipped images."""
        check_is_fitted(self, "model_")
        out = self._outputs(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_1d else out


def standardisation(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` per column of ``y`` (n, k), finite for any finite ``y``; a constant column has scale 1.

    The spread is computed on ``y`` divided by its largest magnitude, so targets near the
    float64 limit (1e200, where squaring overflows) still standardise.

    Examples
    --------
    >>> mean, scale = standardisation(np.array([[1e200], [3e200]]))
    >>> np.allclose(mean, 2e200, rtol=1e-12), np.allclose(scale, 1e200, rtol=1e-12)
    (True, True)
    >>> standardisation(np.array([[5.0], [5.0]]))[1].tolist()
    [1.0]
    """
    big = np.abs(y).max(axis=0)
    big = np.where(big > 0, big, 1.0)
    unit = y / big
    mean = unit.mean(axis=0) * big
    scale = unit.std(axis=0) * big
    return mean, np.where(scale > 0, scale, 1.0)
