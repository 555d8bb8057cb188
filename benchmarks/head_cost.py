"""Cost of the projection heads in one Coda step: codafeat's DINOHead vs torch's weight_norm.

Per step the student runs its inter-organ head on the B global views and its intra-organ
head on the ``n_crops * B`` local crops (forward + backward); the teacher runs both heads on
B global views (forward, no gradient). This times exactly that, on random ``in_dim``-d
features, for three implementations of the same head (3-layer MLP, l2-normalise, 65,536-way
weight-normalised last layer with g fixed to 1):

* ``codafeat``: :class:`codafeat.nn.heads.DINOHead` (plain ``weight_v``, fused
  ``torch._weight_norm`` kernel);
* ``parametrize``: the same head with ``torch.nn.utils.parametrizations.weight_norm``;
* ``normalize``: plain ``weight_v`` with ``F.linear(z, F.normalize(v, dim=1))``.

Rounds alternate between the variants (order rotated); the median round of each is reported
(wall time and the process's CPU time), with the ratio to ``parametrize`` (< 1 means faster). Example::

    python benchmarks/head_cost.py                      # CPU, 1 thread, < 1 min when idle
    python benchmarks/head_cost.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codafeat.nn.heads import DINOHead


class ParametrizedHead(nn.Module):
    """DINOHead's MLP + torch's weight_norm parametrisation for the last layer (g fixed to 1)."""

    def __init__(self, head: DINOHead) -> None:
        super().__init__()
        self.mlp = copy.deepcopy(head.mlp)
        last = nn.Linear(head.last_layer.in_features, head.last_layer.out_features, bias=False)
        with torch.no_grad():
            last.weight.copy_(head.last_layer.weight_v)
        self.last_layer = weight_norm(last, dim=0)
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class NormalizeHead(nn.Module):
    """DINOHead's MLP + ``F.linear(z, F.normalize(v, dim=1))`` (unfused)."""

    def __init__(self, head: DINOHead) -> None:
        super().__init__()
        self.mlp = copy.deepcopy(head.mlp)
        self.weight_v = nn.Parameter(head.last_layer.weight_v.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(self.mlp(x), dim=-1), F.normalize(self.weight_v, dim=1))


def step(
    student: tuple[nn.Module, nn.Module], teacher: tuple[nn.Module, nn.Module], g1, g2, crops, device
) -> tuple[float, float]:
    """One step's head work; returns (wall seconds, process CPU seconds)."""
    for m in student:
        m.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        t_org, t_ins = teacher[0](g2), teacher[1](g2)
    s_org, s_ins = student[0](g1), student[1](crops)
    # a cheap stand-in loss that touches every output, so backward covers the whole head
    loss = (s_org * t_org).mean() + (s_ins.view(-1, *t_ins.shape) * t_ins).mean()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in-dim", type=int, default=320, help="backbone feature size (convnext_atto: 320)")
    p.add_argument("--out-dim", type=int, default=65536)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crops", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    heads = [DINOHead(args.in_dim, args.out_dim) for _ in range(2)]  # inter-organ, intra-organ
    variants = {
        "codafeat": heads,
        "parametrize": [ParametrizedHead(h) for h in heads],
        "normalize": [NormalizeHead(h) for h in heads],
    }
    pairs = {}
    for name, (h_org, h_ins) in variants.items():
        student = (h_org.to(device), h_ins.to(device))
        # The teacher heads are EMA copies of the same shape: running the student's modules
        # under no_grad costs the same and saves memory and set-up time.
        pairs[name] = (student, student)
    g1 = torch.randn(args.batch, args.in_dim, device=device)
    g2 = torch.randn(args.batch, args.in_dim, device=device)
    crops = torch.randn(args.crops * args.batch, args.in_dim, device=device)

    # same outputs, so the comparison is between equal computations
    with torch.no_grad():
        ref = pairs["parametrize"][0][1](crops)
        for name in ("codafeat", "normalize"):
            err = (pairs[name][0][1](crops) - ref).abs().max().item()
            assert err < 1e-4, f"{name} differs from parametrize by {err}"

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for s, t in pairs.values():  # warm-up
        step(s, t, g1, g2, crops, device)
    names = list(pairs)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            s, t = pairs[name]
            times[name].append(step(s, t, g1, g2, crops, device))

    print(
        f"device={device} ({platform.processor() or platform.machine()}, {args.threads} threads), torch {torch.__version__}; "
        f"heads in={args.in_dim} out={args.out_dim}; student: {args.batch} + {args.crops}x{args.batch} rows fwd+bwd, "
        f"teacher: 2x{args.batch} rows fwd; median of {args.repeats} rounds"
    )

    # On a shared machine wall time is noisy; the process CPU time (all threads) is the
    # steadier measure of the work done, and with --threads 1 the two agree when idle.
    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    base_wall = median([w for w, _ in times["parametrize"]])
    base_cpu = median([c for _, c in times["parametrize"]])
    for name, ts in times.items():
        wall, cpu = median([w for w, _ in ts]), median([c for _, c in ts])
        print(
            f"  {name:<12} wall {wall * 1000:8.1f} ms/step (ratio {wall / base_wall:.3f})   "
            f"cpu {cpu * 1000:8.1f} ms/step (ratio {cpu / base_cpu:.3f})"
        )


if __name__ == "__main__":
    main()
