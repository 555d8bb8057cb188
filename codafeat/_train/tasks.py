"""What a fine-tuning task adds to :class:`~codafeat._train.finetune.FineTuneTrainer`.

A task says three things: the training loss of a batch of outputs, what evaluation keeps of
each batch (the argmax mask for segmentation, the outputs otherwise, so that memory stays
bounded by what the score needs), and the validation score that early stopping maximises.
The scores are those of the matching scikit-learn mixins: mean foreground IoU for
segmentation, accuracy (subset accuracy for multi-label) for classification, R² for
regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, r2_score

from ..losses.segmentation import segmentation_loss
from ..metrics import iou


class Task:
    """The interface: ``loss``, ``keep``, ``score`` and the score's name."""

    score_name: str = "score"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep(self, out: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of a batch's outputs (default: all of them)."""
        return out

    def score(self, kept: torch.Tensor, y: torch.Tensor) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class SegmentationTask(Task):
    """Pixel labels: a :func:`~codafeat.losses.segmentation.segmentation_loss`, scored by IoU.

    Examples
    --------
    >>> import torch
    >>> task = SegmentationTask(n_classes=2, loss_name="ce")
    >>> logits = torch.zeros(1, 2, 4, 4); logits[:, 1, :2] = 5.0
    >>> y = torch.zeros(1, 4, 4, dtype=torch.uint8); y[:, :2] = 1
    >>> task.score(task.keep(logits), y)
    1.0
    """

    n_classes: int
    loss_name: str
    score_name: str = "iou"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(out, y, self.loss_name)

    def keep(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(1).to(torch.uint8)

    def score(self, kept: torch.Tensor, y: torch.Tensor) -> float:
        return float(iou(y.cpu().numpy(), kept.numpy(), labels=range(1, self.n_classes)))


@dataclass
class ClassificationTask(Task):
    """Class indices with a (weighted) cross-entropy, or a 0/1 indicator matrix with a BCE.

    ``class_weight`` holds one weight per class (cross-entropy only); ``label_smoothing``
    is torch's.

    Examples
    --------
    >>> import torch
    >>> task = ClassificationTask()
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(task.loss(logits, torch.tensor([0, 1])).item(), 4), task.score(logits, torch.tensor([0, 0]))
    (0.1269, 0.5)
    >>> ml = ClassificationTask(multilabel=True)
    >>> ml.score(torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 0.0]]))
    1.0
    """

    multilabel: bool = False
    class_weight: torch.Tensor | None = None
    label_smoothing: float = 0.0
    score_name: str = "accuracy"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(out, y.float())
        weight = None if self.class_weight is None else self.class_weight.to(out.device)
        return F.cross_entropy(out, y.long(), weight=weight, label_smoothing=self.label_smoothing)

    def score(self, kept: torch.Tensor, y: torch.Tensor) -> float:
        if self.multilabel:
            return float(accuracy_score(y.numpy().astype(int), (kept > 0).numpy().astype(int)))
        return float(accuracy_score(y.numpy(), kept.argmax(1).numpy()))


@dataclass
class RegressionTask(Task):
    """Standardised continuous targets ``(n, n_outputs)`` with a mean squared error, scored by R².

    Examples
    --------
    >>> import torch
    >>> task = RegressionTask()
    >>> y = torch.tensor([[0.0], [1.0], [2.0]])
    >>> task.loss(y + 1, y).item(), task.score(y, y)
    (1.0, 1.0)
    """

    score_name: str = "r2"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y.float())

    def score(self, kept: torch.Tensor, y: torch.Tensor) -> float:
        if len(y) < 2:
            return float("nan")
        return float(r2_score(y.numpy(), kept.numpy()))
