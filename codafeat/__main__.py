"""``python -m codafeat`` (also what ``torchrun -m codafeat pretrain ...`` runs)."""

from .cli import run

if __name__ == "__main__":
    run()
