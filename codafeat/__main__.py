"""``python -m codafeat`` (also what ``torchrun -m codafeat pretrain ...`` runs)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
