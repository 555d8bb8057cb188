"""Is the linear probe's C the reason every encoder sits near the majority class? (issue 22 ablation)

Reruns the linear probe of ``benchmarks/transfer.py`` on its stored embeddings (same draws,
same fixed test split) with the probe's ``C`` chosen inside each training draw by 3-fold
cross-validation over 1e-4 .. 1e2 (``LogisticRegressionCV``), the same for every encoder.
The 1 % draws are left out (too few images per class for an inner split).

Usage (after ``transfer.py`` has embedded)::

    python benchmarks/probe_regularisation.py --out benchmarks/out/transfer
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import transfer as T  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "out" / "transfer"))
    p.add_argument("--encoders", default="coda,coda_koleo,inter_only,intra_only,random,raw_pixels")
    p.add_argument("--tasks", default="knee_kl,jsrt,shoulder")
    a = p.parse_args(argv)
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import get_scorer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore")
    args = T.parse_args(["--out", a.out, "--tasks", a.tasks])
    tasks = T.load_tasks(Path(args.data), args)
    print("| task | encoder | 10% | 20% | 50% |\n|---|---|---|---|---|")
    for task, t in tasks.items():
        scoring = t["scoring"]
        for name in a.encoders.split(","):
            E = np.load(Path(a.out) / "embeddings" / f"{name}__{task}.npy")
            cells = []
            for frac in ("10%", "20%", "50%"):
                scores = []
                for tr in t["draws"][frac]:
                    probe = make_pipeline(
                        StandardScaler(),
                        LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=3, max_iter=3000, scoring=scoring),
                    )
                    probe.fit(E[tr], t["y"][tr])
                    scores.append(get_scorer(scoring)(probe, E[t["test"]], t["y"][t["test"]]))
                cells.append(f"{100 * np.mean(scores):.1f} ± {100 * np.std(scores):.1f}")
            print(f"| {task} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
