"""Peak memory of writing a ConvNeXt-B-sized weights file (issue 20 item 5).

    python benchmarks/weights_memory.py               # convnext_base (88M parameters, 350 MB)
    python benchmarks/weights_memory.py --dry-run     # test_convnext (tested in CI)

Each operation runs in a fresh process that first builds the backbone's state dict (timm,
random initialisation), then samples its resident memory every millisecond while the
operation runs. The figure is the peak above the memory held before the operation, in
units of the state dict's size:

* **safetensors** ``save_file(state, path)``: the floor (it streams the tensors to the file);
* **codafeat** ``Weights.from_state(state, config).save(path)``: what
  ``CodaEncoder.save``, ``CodaPretrainer.save`` and the fine-tuned estimators' ``save`` do;
* **codafeat, then load**: the same, then ``Weights.state_dict()`` (the tensors decoded
  once, as an estimator does when it is given the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _peak_during(fn) -> int:
    """Peak RSS above the RSS before ``fn()``, sampled every millisecond."""
    before = _rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return max(peak[0], _rss()) - before


def child(op: str, backbone: str, out: str) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from codafeat.formats.weights import Weights, make_config

    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=0)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    del model
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    cfg = make_config(backbone=backbone, embed_dim=8, image_size=32, mean=[0.5] * 3, std=[0.25] * 3)
    ops = {
        "safetensors": lambda: save_file(state, out),
        "codafeat": lambda: Weights.from_state(state, cfg).save(out),
        "codafeat, then load": lambda: Weights.from_state(state, cfg).state_dict(),
    }
    extra = _peak_during(ops[op])
    print(json.dumps({"op": op, "state_bytes": nbytes, "extra_bytes": extra}))


def measure(backbone: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in ("safetensors", "codafeat", "codafeat, then load"):
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    op,
                    "--backbone",
                    backbone,
                    "--out",
                    os.path.join(tmp, "w.safetensors"),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-3000:])
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def markdown(rows: list[dict], backbone: str, command: str) -> str:
    size = rows[0]["state_bytes"]
    lines = [
        f"### Writing a {backbone} weights file ({size / 1e6:.0f} MB of tensors): peak memory",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores. Command: `{command}`. Peak resident memory "
        "above what the process held before the operation (sampled every ms), one fresh process each.",
        "",
        "| operation | peak MB above | x the state dict |",
        "|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['op']} | {r['extra_bytes'] / 1e6:.0f} | {r['extra_bytes'] / size:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="test_convnext (for CI)")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    backbone = args.backbone or ("test_convnext" if args.dry_run else "convnext_base")
    if args.child:
        child(args.child, backbone, args.out)
        return 0
    rows = measure(backbone)
    print(markdown(rows, backbone, "python benchmarks/weights_memory.py" + (" --dry-run" if args.dry_run else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
