"""The prepared device check (issue 13): what codafeat's GPU path costs, on the machine at hand.

    bash benchmarks/gpu_check.sh             # on a GPU machine: at most 8 minutes
    bash benchmarks/gpu_check.sh --dry-run   # anywhere: a tiny backbone, a few steps (tested in CI)

Stages, each on its own and each reported even when another one fails (out of memory, a
compile error):

1. **Coda step vs bare step.** A full ``CodaTrainer.step`` (symmetric objective, both
   heads, both losses, clipping, AdamW, EMA, centre) against forward+backward+AdamW of the
   bare student backbone on the same views. ``convnext_base`` at 224 px, 12 crops of 96 px,
   in the policy's autocast dtype (bf16 where supported), at batch 64 and 128. Reports
   img/s for both, their ratio and the peak GPU memory.
2. The same at batch 64 with ``torch.compile`` (``compile=True``) against eager.
3. **Encoder throughput** on 1024-px 8-bit PNGs (synthetic, written to a temporary folder)
   with the loader's workers (``num_workers="auto"``), against the bare model on pre-decoded
   tensors.
4. **Distributed embedding**: ``codafeat embed`` on the same PNGs in one process against
   ``torchrun --nproc_per_node=N -m codafeat embed`` (N = the GPUs; 2 CPU processes in the
   dry run). Reports both wall times (process start and weights loading included), their
   ratio, and whether the two outputs are the same bytes.
5. **A 300-step pretraining run** on synthetic radiographs with the ``small`` recipe
   (``CodaPretrainer.fit``). It must end with finite losses. Reports the final losses and
   the data-wait share.

It prints a Markdown block for benchmarks/RESULTS.md (with the card's name), and exits
non-zero if a stage failed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_throughput import interleaved, make_batch  # noqa: E402

from codafeat import CodaEncoder, CodaPretrainer, get_recipe, make_radiograph_phantoms  # noqa: E402
from codafeat._defaults import MEAN, STD  # noqa: E402
from codafeat._device import DevicePolicy, resolve_device  # noqa: E402
from codafeat._train import dist as D  # noqa: E402
from codafeat._train.loop import CodaTrainer, Schedules  # noqa: E402
from codafeat.losses.inter_organ import InterOrganLoss  # noqa: E402
from codafeat.losses.intra_organ import IntraOrganLoss  # noqa: E402
from codafeat.nn.coda_model import CodaNetwork  # noqa: E402
from codafeat.nn.ema import make_teacher  # noqa: E402

FULL = dict(
    backbone="convnext_base",
    size=224,
    local=96,
    crops=12,
    head=65536,
    batches=(64, 128),
    compile_batch=64,
    steps=5,
    warmup=2,
    png=(256, 1024),
    enc_backbone="convnext_base",
    pre_steps=300,
    compile=True,
)
DRY = dict(
    backbone="test_convnext",
    size=32,
    local=32,
    crops=2,
    head=64,
    batches=(4,),
    compile_batch=4,
    steps=2,
    warmup=1,
    png=(8, 128),
    enc_backbone="test_convnext",
    pre_steps=3,
    compile="eager",
)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def step_vs_bare(cfg: dict, batch_size: int, device: torch.device, compile: Any = False) -> dict[str, Any]:
    """Stage 1/2: Coda step and bare step img/s on the same views, interleaved."""
    policy = DevicePolicy(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n = cfg["steps"] + cfg["warmup"] + 1
    batch = make_batch(batch_size, cfg["size"], cfg["local"], cfg["crops"], 4, device)
    _reset_peak(device)
    torch.manual_seed(0)
    student = policy.module(CodaNetwork(cfg["backbone"], mean=MEAN, std=STD, head_out_dim=cfg["head"]))
    sched = Schedules(
        lr=np.full(n, 1e-4), weight_decay=np.full(n, 0.04), momentum=np.full(n, 0.996), teacher_temp=np.full(1, 0.04)
    )
    trainer = CodaTrainer(
        student=student,
        teacher=make_teacher(student),
        inter_loss=InterOrganLoss(),
        intra_loss=IntraOrganLoss(out_dim=cfg["head"]).to(device),
        lambda_inter=1.0,
        lambda_intra=1.0,
        schedules=sched,
        steps_per_epoch=n,
        clip_grad=3.0,
        freeze_last_layer=0,
        device=device,
        dist_info=D.DistInfo(),
        n_local_crops=cfg["crops"],
        symmetric=True,
        compile=compile,
    )
    student.train()
    bare = policy.module(CodaNetwork(cfg["backbone"], mean=MEAN, std=STD, with_org=False, with_ins=False)).train()
    bare_fn = (
        torch.compile(bare.encoder, **({"backend": compile} if isinstance(compile, str) else {}))
        if compile
        else bare.encoder
    )
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-4)
    g = policy.batch(torch.cat([batch["g1"], batch["g2"]]))
    crops = policy.batch(batch["locals"])

    def bare_step() -> None:
        with policy.autocast():
            loss = bare_fn(g).float().mean() + bare_fn(crops).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    it = iter(range(n))
    t0 = time.perf_counter()
    times = interleaved(
        {"coda": lambda: trainer.step(batch, 0, next(it)), "bare": bare_step}, cfg["steps"], cfg["warmup"], sync
    )
    coda, base = float(np.median(times["coda"])), float(np.median(times["bare"]))
    return {
        "batch": batch_size,
        "coda_ips": batch_size / coda,
        "bare_ips": batch_size / base,
        "ratio": base / coda,
        "peak_gib": _peak_gib(device),
        "wall_s": time.perf_counter() - t0,
    }


def encoder_throughput(cfg: dict, device: torch.device) -> dict[str, Any]:
    """Stage 3: CodaEncoder.transform on PNG files vs the bare model on decoded tensors."""
    n, side = cfg["png"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            img = (rng.random((side, side)) * 40 + np.linspace(60, 200, side)[None, :]).astype(np.uint8)
            paths.append(os.path.join(tmp, f"{i:04d}.png"))
            Image.fromarray(img).save(paths[-1])
        enc = CodaEncoder(
            backbone=cfg["enc_backbone"],
            image_size=cfg["size"],
            batch_size=32,
            num_workers="auto",
            device=device,
            random_state=0,
        ).fit()
        enc.transform(paths[:32])  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        enc.transform(paths)
        sync()
        t_enc = time.perf_counter() - t0
    x = torch.rand(32, 1, cfg["size"], cfg["size"])
    policy = DevicePolicy(device)
    with torch.inference_mode():
        xb = policy.batch(x)
        for _ in range(2):
            with policy.autocast():
                enc.model_(xb)
        sync()
        t0 = time.perf_counter()
        for _ in range(max(1, n // 32)):
            with policy.autocast():
                enc.model_(policy.batch(x))
        sync()
        t_bare = (time.perf_counter() - t0) / (max(1, n // 32) * 32) * n
    return {
        "images": n,
        "side": side,
        "encoder_ips": n / t_enc,
        "bare_ips": n / t_bare,
        "ratio": t_bare / t_enc,
        "workers": os.cpu_count(),
    }


def distributed_embed(cfg: dict, device: torch.device) -> dict[str, Any]:
    """Stage 4: ``codafeat embed`` in one process vs under ``torchrun`` (one process per GPU)."""
    import subprocess

    n, side = cfg["png"]
    nproc = torch.cuda.device_count() if device.type == "cuda" else 2
    rng = np.random.default_rng(1)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        images = os.path.join(tmp, "images")
        os.mkdir(images)
        for i in range(n):
            img = (rng.random((side, side)) * 40 + np.linspace(60, 200, side)[None, :]).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(images, f"{i:04d}.png"))
        weights = (
            CodaEncoder(backbone=cfg["enc_backbone"], image_size=cfg["size"], random_state=0)
            .fit()
            .save(os.path.join(tmp, "w.safetensors"))
        )
        common = [
            "-m",
            "codafeat",
            "-q",
            "embed",
            images,
            "--weights",
            str(weights),
            "--batch-size",
            "32",
            "--verbose",
            "0",
            "--device",
            "auto" if device.type == "cuda" else "cpu",
        ]
        times = {}
        for name, launcher in (
            ("one", []),
            ("ranks", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]),
        ):
            out = os.path.join(tmp, f"{name}.npy")
            cmd = [sys.executable, *launcher, *common, "--out", out]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            times[name] = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"{name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        same = Path(tmp, "one.npy").read_bytes() == Path(tmp, "ranks.npy").read_bytes()
    return {
        "images": n,
        "nproc": nproc,
        "one_s": times["one"],
        "ranks_s": times["ranks"],
        "speedup": times["one"] / times["ranks"],
        "same_bytes": same,
    }


def short_pretraining(cfg: dict, device: torch.device) -> dict[str, Any]:
    """Stage 5: CodaPretrainer.fit for about ``pre_steps`` steps; the losses must stay finite."""
    X, organs = make_radiograph_phantoms(
        10 if cfg is DRY else 150, image_size=48 if cfg is DRY else 96, random_state=0, return_variants=False
    )
    params = get_recipe(
        "small",
        backbone=cfg["enc_backbone"] if cfg is DRY else "convnext_atto",
        device=device,
        monitor_every=0,
        random_state=0,
        num_workers=0 if cfg is DRY else min(8, os.cpu_count() or 1),
    )
    if cfg is DRY:
        params.update(
            image_size=32,
            local_size=32,
            n_local_crops=2,
            head_out_dim=64,
            head_hidden_dim=32,
            head_bottleneck_dim=16,
            batch_size=8,
        )
    steps_per_epoch = len(X) // params["batch_size"]
    params["epochs"] = max(1, math.ceil(cfg["pre_steps"] / steps_per_epoch))
    params["warmup_epochs"] = min(params["warmup_epochs"], params["epochs"] - 1)
    t0 = time.perf_counter()
    pre = CodaPretrainer(**params).fit(X, organs)
    last = pre.history_[-1]
    finite = all(math.isfinite(r["loss"]) for r in pre.history_)
    return {
        "steps": params["epochs"] * steps_per_epoch,
        "wall_s": time.perf_counter() - t0,
        "finite": finite,
        "loss": last["loss"],
        "loss_inter": last["loss_inter"],
        "loss_intra": last["loss_intra"],
        "data_wait_share": float(np.mean([r["data_wait_share"] for r in pre.history_])),
    }


def _run(name: str, fn, results: dict, failures: list) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - every stage reports, whatever failed
        results[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        failures.append(name)
        traceback.print_exc()
    print(f"[{name}] {time.perf_counter() - t0:.1f}s: {results[name]}", flush=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(results: dict, device: torch.device, cfg: dict, dry: bool) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    policy = DevicePolicy(device)
    lines = [
        f"### Device check{' (dry run)' if dry else ''}: {card}",
        "",
        f"torch {torch.__version__}, precision {policy.precision}, backbone {cfg['backbone']} at {cfg['size']} px, "
        f"{cfg['crops']} crops of {cfg['local']} px, head {cfg['head']}. Command: "
        f"`bash benchmarks/gpu_check.sh{' --dry-run' if dry else ''}`.",
        "",
        "| stage | batch | Coda img/s | bare img/s | ratio | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name.startswith("step"):
            if "error" in r:
                lines.append(f"| {name} | | {r['error']} | | | |")
            else:
                lines.append(
                    f"| {name} | {r['batch']} | {_fmt(r['coda_ips'])} | {_fmt(r['bare_ips'])} | "
                    f"**{_fmt(r['ratio'])}** | {_fmt(r['peak_gib'])} |"
                )
    e = results.get("encoder", {})
    lines += [
        "",
        f"Encoder on {e.get('images')} PNGs of {e.get('side')} px: "
        + (
            e["error"]
            if "error" in e
            else f"{_fmt(e['encoder_ips'])} img/s vs bare {_fmt(e['bare_ips'])} img/s, ratio **{_fmt(e['ratio'])}**."
        ),
    ]
    d = results.get("embed", {})
    lines += [
        "",
        f"Embedding {d.get('images')} PNGs: "
        + (
            d["error"]
            if "error" in d
            else f"one process {_fmt(d['one_s'])} s, torchrun with {d['nproc']} process(es) {_fmt(d['ranks_s'])} s "
            f"(speed-up **{_fmt(d['speedup'])}**, process start included), same bytes: {d['same_bytes']}."
        ),
    ]
    p = results.get("pretraining", {})
    lines += [
        "",
        "Short pretraining: "
        + (
            p["error"]
            if "error" in p
            else f"{p['steps']} steps in {_fmt(p['wall_s'])} s, finite losses: {p['finite']} (final {_fmt(p['loss'])}, "
            f"inter {_fmt(p['loss_inter'])}, intra {_fmt(p['loss_intra'])}), data-wait share {_fmt(p['data_wait_share'])}."
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny backbone, few steps, any device (for CI)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    cfg = DRY if args.dry_run else FULL
    device = resolve_device(args.device)
    if device.type == "cpu" and not args.dry_run:
        print("no GPU here: run with --dry-run, or on a machine with a GPU", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    results: dict[str, Any] = {}
    failures: list[str] = []
    try:
        for b in cfg["batches"]:
            _run(f"step, eager, batch {b}", lambda b=b: step_vs_bare(cfg, b, device), results, failures)
        _run("encoder", lambda: encoder_throughput(cfg, device), results, failures)
        _run("embed", lambda: distributed_embed(cfg, device), results, failures)
        if "embed" in results and results["embed"].get("same_bytes") is False:
            failures.append("embed (torchrun output differs from one process)")
        _run("pretraining", lambda: short_pretraining(cfg, device), results, failures)
        if "pretraining" in results and not results["pretraining"].get("finite", False):
            failures.append("pretraining (non-finite losses)")
        # last: compiling convnext_base can take minutes; the time limit then costs only this stage
        _run(
            f"step, compiled, batch {cfg['compile_batch']}",
            lambda: step_vs_bare(cfg, cfg["compile_batch"], device, compile=cfg["compile"]),
            results,
            failures,
        )
    except KeyboardInterrupt:  # gpu_check.sh's time limit: report what was measured
        failures.append("interrupted (time limit)")
    print("\n" + markdown(results, device, cfg, args.dry_run), flush=True)
    if failures:
        print(f"\nFAILED stages: {failures}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
