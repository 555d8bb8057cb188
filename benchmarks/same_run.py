"""Is a refactor behaviour-neutral? A digest of four tiny pretraining runs, to compare across commits.

    python benchmarks/same_run.py > after.json        # in this checkout
    (cd ../old-checkout && python benchmarks/same_run.py) > before.json
    cmp before.json after.json                         # the same bytes: the same runs

Four configurations of a tiny ``test_convnext`` on phantoms, two epochs, monitor on, one
thread: the paper's objective (symmetric), with KoLeo, inter-organ only, and intra-organ
only in the printed asymmetric form. For each: every history record's losses, monitor and
teacher figures, and two sums of the exported teacher's weights. Issue 20's redesign
(objective, trainer outputs, epoch loop) left all four the same bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "coda": {},
    "koleo": {"koleo_weight": 0.1},
    "inter": {"lambda_intra": 0.0},
    "intra_asym": {"lambda_inter": 0.0, "symmetric": False},
}


def main() -> int:
    import torch

    from codafeat import CodaPretrainer
    from codafeat.phantoms import make_radiograph_phantoms

    torch.set_num_threads(1)
    X, y = make_radiograph_phantoms(8, organs=("chest", "hand"), image_size=48, random_state=0, return_variants=False)
    out = {}
    for name, kw in CONFIGS.items():
        pre = CodaPretrainer(
            backbone="test_convnext",
            image_size=32,
            local_size=32,
            n_local_crops=2,
            head_out_dim=64,
            head_hidden_dim=32,
            head_bottleneck_dim=16,
            batch_size=8,
            epochs=2,
            warmup_epochs=0,
            random_state=0,
            device="cpu",
            monitor_every=1,
            **kw,
        ).fit(X, y)
        w = torch.cat([p.detach().flatten() for p in pre.teacher_.parameters()]).double()
        out[name] = {
            "history": [
                {k: v for k, v in h.items() if k.startswith(("loss", "monitor", "teacher_"))} for h in pre.history_
            ],
            "weights_sum": float(w.sum()),
            "weights_abs_sum": float(w.abs().sum()),
        }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
