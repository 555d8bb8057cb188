"""Within-organ collapse, per epoch, beside the organ kNN: the monitor's diagnostics of several pretraining runs.

    python benchmarks/monitor_figure.py --out benchmarks/figures/monitor_arms.png \\
        small8_s1=benchmarks/out/t30/small8_s1/ckpt_coda/metrics.jsonl \\
        inter8=benchmarks/out/t30/inter8/ckpt_inter_only/metrics.jsonl

Each ``NAME=metrics.jsonl`` is a run's per-epoch history (``CodaPretrainer`` writes it beside its
checkpoints). The figure has one panel per diagnostic of the training monitor
(:mod:`codafeat._train.monitor`), one line per run: the organ kNN accuracy of held-out images,
``organ_spread`` (how far each organ's embeddings are from their mean direction; falling towards
0 is the within-organ collapse issue 30 suspects of the inter-organ branch) and ``organ_rank``
(the effective rank of each organ's embeddings). They describe a run; they are never used to
choose one (transfer is measured on the dev suite, ``benchmarks/transfer.py``). A Markdown table of
the last epoch of every run is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: The monitor's keys drawn, with their axis labels.
PANELS = {
    "monitor_knn_accuracy": "organ kNN accuracy (held out)",
    "organ_spread": "within-organ spread",
    "organ_rank": "within-organ effective rank",
}


def read_history(path: Path) -> list[dict]:
    """The per-epoch records of a ``metrics.jsonl``, in epoch order."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no epochs recorded")
    return sorted(rows, key=lambda r: r.get("epoch", 0))


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Epochs (1-based) and values of ``key`` where the run recorded it."""
    pts = [(i + 1, float(r[key])) for i, r in enumerate(rows) if r.get(key) is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=METRICS_JSONL")
    p.add_argument("--out", required=True, help="the figure (PNG)")
    a = p.parse_args(argv)
    runs: dict[str, list[dict]] = {}
    for spec in a.runs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"expected NAME=METRICS_JSONL, got {spec!r}")
        runs[name] = read_history(Path(path))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (key, label) in zip(axes, PANELS.items()):
        for name, rows in runs.items():
            x, y = series(rows, key)
            if x:
                ax.plot(x, y, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    print("| run | epochs | " + " | ".join(PANELS.values()) + " |")
    print("|---" * (len(PANELS) + 2) + "|")
    for name, rows in runs.items():
        last = rows[-1]
        cells = [f"{last[k]:.3f}" if last.get(k) is not None else "–" for k in PANELS]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
