"""Training objectives, one per file.

- :class:`InterOrganLoss`: supervised contrast over organ labels (paper Eq. 1).
- :class:`IntraOrganLoss`: DINO self-distillation from global view to local crops (paper Eq. 2).
- :class:`KoLeoLoss`: the KoLeo spreading regulariser of DINOv2 (not in the paper; optional).
- :func:`segmentation_loss`, :func:`dice_loss`: the segmenter's pixel losses.
"""

from .inter_organ import InterOrganLoss
from .intra_organ import IntraOrganLoss
from .koleo import KoLeoLoss
from .segmentation import LOSSES, dice_loss, segmentation_loss

__all__ = ["LOSSES", "InterOrganLoss", "IntraOrganLoss", "KoLeoLoss", "dice_loss", "segmentation_loss"]
