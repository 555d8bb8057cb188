"""``python -m codafeat`` (also what ``torchrun -m codafeat pretrain ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
