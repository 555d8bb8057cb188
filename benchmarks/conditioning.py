"""How should ``CodaEncoder.transform``'s output be conditioned for scikit-learn's defaults? (issue 30, item 4)

    python benchmarks/conditioning.py --weights benchmarks/out/t30/small8/coda.safetensors --out benchmarks/out/t30/cond

The README's first pipeline is ``make_pipeline(CodaEncoder(...), LogisticRegression())``: no
scaler, scikit-learn's default penalty (C=1) and, unless ``--max-iter`` says otherwise, its default
``max_iter=100`` (fits that stop before converging are counted). This script measures it on the dev suite's NIH
pneumonia task (AUC; the fixed patient-grouped test split and the training draws of
``benchmarks/transfer.py``) for each ``normalize`` of the encoder: ``"l2"`` (unit vectors),
``None`` (the backbone's output as it is) and ``"standard"`` (each feature standardised with the
training draw's statistics, learned in the pipeline's fit). The same for random init and, as
the reference, raw pixels (as they are, and standardised). Bone age (MAE, plain ``Ridge()``)
is reported beside it. Rule 4 of RESULTS.md's issue-30 section decides the default from the
NIH row of the adopted encoder.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import transfer as tr  # noqa: E402  (the dev suite's tasks and draws)

VARIANTS = ("l2", None, "standard")


def condition(E: np.ndarray, train: np.ndarray, how: str | None) -> np.ndarray:
    """The encoder's output under ``normalize=how``, from raw embeddings; "standard" uses the training rows."""
    if how == "l2":
        return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    if how == "standard":
        mean, sd = E[train].mean(0), E[train].std(0)
        return (E - mean) / np.where(sd > 0, sd, 1.0)
    return E


def main(argv: list[str] | None = None) -> int:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    from codafeat import CodaEncoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True, help="a work folder (decoded task images are kept there)")
    p.add_argument("--data", default=str(tr.rp.DATA))
    p.add_argument("--draws", type=int, default=5)
    p.add_argument(
        "--max-iter", type=int, default=100, help="LogisticRegression's max_iter (100: scikit-learn's default)"
    )
    a = p.parse_args(argv)
    args = tr.parse_args(["--out", a.out, "--draws", str(a.draws), "--tasks", "nih_pneumonia,boneage"])
    Path(a.out).mkdir(parents=True, exist_ok=True)
    tasks = tr.load_tasks(Path(a.data), args, 64)
    common = dict(device="cpu", num_workers=0, batch_size=64, normalize=None)
    encoders = {
        "Coda": CodaEncoder(weights=a.weights, **common).fit(),
        "random init": CodaEncoder(backbone="convnext_atto", image_size=64, random_state=0, **common).fit(),
    }
    print(
        f"weights: {a.weights}; LogisticRegression(max_iter={a.max_iter}) (NIH, AUC %) and Ridge() (bone age, "
        "MAE months); 'not converged': NIH fits (of 4 fractions x draws) that warned ConvergenceWarning"
    )
    print(
        "| encoder | normalize | NIH "
        + " | NIH ".join(tasks["nih_pneumonia"]["draws"])
        + " | NIH mean | not converged | bone age 50 % |"
    )
    print("|---" * (5 + len(tasks["nih_pneumonia"]["draws"])) + "|")
    raw = {name: {t: enc.transform(tasks[t]["X"]) for t in tasks} for name, enc in encoders.items()}
    raw["raw pixels"] = {t: tasks[t]["X"].reshape(len(tasks[t]["X"]), -1) for t in tasks}
    for name, per_task in raw.items():
        for how in VARIANTS if name != "raw pixels" else (None, "standard"):
            cells, per_draw, unconverged = [], [], 0
            t = tasks["nih_pneumonia"]
            for draws in t["draws"].values():
                scores = []
                for tr_idx in draws:
                    E = condition(per_task["nih_pneumonia"], tr_idx, how)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", ConvergenceWarning)
                        model = LogisticRegression(max_iter=a.max_iter).fit(E[tr_idx], t["y"][tr_idx])
                    unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
                    scores.append(tr.score("roc_auc", t["y"][t["test"]], model, E[t["test"]]))
                cells.append(np.mean(scores))
                per_draw.append(scores)
            spread = np.std(np.mean(per_draw, axis=0))  # the 4-fraction mean of each draw, over draws
            b = tasks["boneage"]
            maes = []
            for tr_idx in b["draws"]["50%"]:
                E = condition(per_task["boneage"], tr_idx, how)
                maes.append(tr.score("mae", b["y"][b["test"]], Ridge().fit(E[tr_idx], b["y"][tr_idx]), E[b["test"]]))
            print(
                f"| {name} | {how} | "
                + " | ".join(f"{100 * c:.1f}" for c in cells)
                + f" | {100 * np.mean(cells):.1f} ± {100 * spread:.1f} | {unconverged} | {np.mean(maes):.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
