"""Coda's two training objectives, one per file.

- :class:`InterOrganLoss`: supervised contrast over organ labels (paper Eq. 1).
- :class:`IntraOrganLoss`: DINO self-distillation from global view to local crops (paper Eq. 2).
"""

from .inter_organ import InterOrganLoss
from .intra_organ import IntraOrganLoss

__all__ = ["InterOrganLoss", "IntraOrganLoss"]
