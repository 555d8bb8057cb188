"""Run by tests in a separate process: a tiny CodaPretrainer fit, weights written to a file.

Usage: python _pretrain_worker.py FOLDER OUT.safetensors JSON_PARAMS [PAUSE_AT_EPOCH MARKER]

With PAUSE_AT_EPOCH, the process writes MARKER when that epoch (0-based) starts and then
sleeps, so that the test can ``kill -9`` it in the middle of training.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from codafeat._train.loop import CodaTrainer  # noqa: E402
from codafeat.pretrain import CodaPretrainer  # noqa: E402

folder, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if len(sys.argv) > 4:
    pause_at, marker = int(sys.argv[4]), Path(sys.argv[5])
    real = CodaTrainer.run_epoch

    def run_epoch(self, loader, epoch, **kw):
        if epoch == pause_at:
            marker.write_text("paused")
            time.sleep(600)
        return real(self, loader, epoch, **kw)

    CodaTrainer.run_epoch = run_epoch

record_to = os.environ.get("CODA_RECORD_INDICES")
if record_to:  # write every batch's image indices (one JSON line per step)
    real_step = CodaTrainer.step

    def step(self, batch, epoch, it):
        with open(record_to, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "index": batch["index"].tolist()}) + "\n")
        return real_step(self, batch, epoch, it)

    CodaTrainer.step = step

for k in ("global_scale", "local_scale"):
    if k in params:
        params[k] = tuple(params[k])
est = CodaPretrainer(**params).fit(folder)
rank = int(os.environ.get("RANK", "0"))
target = out.replace(".safetensors", f".rank{rank}.safetensors") if "WORLD_SIZE" in os.environ else out
est.encoder_.save(target)
from safetensors.torch import save_file  # noqa: E402

save_file(
    {k: v.contiguous() for k, v in est.student_.state_dict().items()}, target.replace(".safetensors", ".student.st")
)
Path(out + f".history{rank}.json").write_text(json.dumps(est.history_))
