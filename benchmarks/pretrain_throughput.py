"""Images/s of a full Coda training step vs forward+backward of the bare student backbone.

Both run in the same process, alternately (one step each per round; medians reported), on the same pre-made views (two global views and
``n_local_crops`` local crops per image), same backbone, batch and device:

* **coda**: ``CodaTrainer.step`` — teacher forward (g2, both heads), student forward (g1 and
  all crops, both heads), inter- and intra-organ losses, backward, clipping, AdamW, EMA,
  centre update;
* **bare**: student backbone forward on g1 and the crops, a mean of the features as loss,
  backward and an AdamW step (no heads, no teacher, no EMA).

The ratio coda/bare says what Coda's extra machinery costs. Example::

    python benchmarks/pretrain_throughput.py --backbone convnext_tiny --batch-size 8 --steps 3
    python benchmarks/pretrain_throughput.py --backbone convnext_atto --head-out-dim 65536
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from codafeat._defaults import MEAN as DEFAULT_MEAN
from codafeat._defaults import STD as DEFAULT_STD
from codafeat._device import resolve_device
from codafeat._train import dist as D
from codafeat._train.loop import CodaTrainer, Schedules
from codafeat.losses.inter_organ import InterOrganLoss
from codafeat.losses.intra_organ import IntraOrganLoss
from codafeat.nn.coda_model import CodaNetwork
from codafeat.nn.ema import make_teacher


def make_batch(b: int, size: int, local: int, n_crops: int, n_organs: int, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "g1": torch.rand(b, 1, size, size, generator=g),
        "g2": torch.rand(b, 1, size, size, generator=g),
        "locals": torch.rand(n_crops * b, 1, local, local, generator=g),
        "labels": torch.arange(b) % n_organs,
    }


def interleaved(fns: dict, steps: int, warmup: int, sync) -> dict[str, list[float]]:
    """Time the functions alternately, one step each per round, so that machine noise hits
    both alike; returns each one's per-step seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="convnext_tiny")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--n-local-crops", type=int, default=12)
    ap.add_argument("--head-out-dim", type=int, default=65536)
    ap.add_argument("--head-hidden-dim", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as CodaPretrainer.fit does
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = make_batch(args.batch_size, args.image_size, args.local_size, args.n_local_crops, 3, device)
    n_steps_total = args.steps + args.warmup + 1

    torch.manual_seed(0)
    student = CodaNetwork(
        args.backbone,
        mean=DEFAULT_MEAN,
        std=DEFAULT_STD,
        head_out_dim=args.head_out_dim,
        head_hidden_dim=args.head_hidden_dim,
    ).to(device)
    if device.type == "cuda":
        student = student.to(memory_format=torch.channels_last)
    teacher = make_teacher(student)
    sched = Schedules(
        lr=np.full(n_steps_total, 1e-4),
        weight_decay=np.full(n_steps_total, 0.04),
        momentum=np.full(n_steps_total, 0.996),
        teacher_temp=np.full(1, 0.04),
    )
    trainer = CodaTrainer(
        student=student,
        teacher=teacher,
        inter_loss=InterOrganLoss(),
        intra_loss=IntraOrganLoss(out_dim=args.head_out_dim).to(device),
        lambda_inter=1.0,
        lambda_intra=1.0,
        schedules=sched,
        steps_per_epoch=n_steps_total,
        clip_grad=3.0,
        freeze_last_layer=0,
        device=device,
        dist_info=D.DistInfo(),
        n_local_crops=args.n_local_crops,
    )
    student.train()
    teacher.train()
    it = iter(range(n_steps_total))

    torch.manual_seed(0)
    bare = CodaNetwork(args.backbone, mean=DEFAULT_MEAN, std=DEFAULT_STD, with_org=False, with_ins=False).to(device)
    if device.type == "cuda":
        bare = bare.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-4)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    g1 = batch["g1"].to(device)
    crops = batch["locals"].to(device)

    def bare_step() -> None:
        with amp:
            loss = bare.encoder(g1).float().mean() + bare.encoder(crops).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = interleaved(
        {"coda": lambda: trainer.step(batch, 0, next(it)), "bare": bare_step}, args.steps, args.warmup, sync
    )
    t_coda, t_bare = float(np.median(times["coda"])), float(np.median(times["bare"]))
    ips_coda, ips_bare = args.batch_size / t_coda, args.batch_size / t_bare
    ratios = [b / c for c, b in zip(times["coda"], times["bare"])]
    mem = ""
    if device.type == "cuda":
        mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {device}{mem}"
    )
    print(
        f"backbone {args.backbone}, batch {args.batch_size}, global {args.image_size}px, "
        f"{args.n_local_crops} crops of {args.local_size}px, head out {args.head_out_dim}"
    )
    print(f"coda step : {ips_coda:8.2f} images/s ({t_coda * 1000:.0f} ms/step)")
    print(f"bare step : {ips_bare:8.2f} images/s ({t_bare * 1000:.0f} ms/step)")
    print(f"ratio coda/bare (medians): {ips_coda / ips_bare:.3f}; per round: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
