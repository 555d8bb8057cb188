"""Checkpoint/resume after ``kill -9`` and 2-process DDP (gloo) against one process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY_PRETRAIN as TINY
from helpers import make_organ_folder

#: Child processes and benchmark dry runs: `pytest -m "not slow"` leaves them out of a quick local loop.
pytestmark = pytest.mark.slow

WORKER = str(Path(__file__).resolve().parents[1] / "_pretrain_worker.py")
PARAMS = dict(TINY, epochs=4, device="cpu")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _run(folder, out, params, *extra, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, WORKER, str(folder), str(out), json.dumps(params), *map(str, extra)],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_organ_folder(tmp_path_factory.mktemp("organs_resume"), {"chest": 8, "hand": 8, "knee": 8}, seed=5)


def test_kill_9_then_resume_reaches_the_uninterrupted_weights(folder, tmp_path):
    ref = tmp_path / "ref.safetensors"
    r = _run(folder, ref, PARAMS)
    assert r.returncode == 0, r.stderr[-3000:]

    ckpt = tmp_path / "ckpt"
    params = dict(PARAMS, checkpoint_dir=str(ckpt), checkpoint_every=1)
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [
            sys.executable,
            WORKER,
            str(folder),
            str(tmp_path / "killed.safetensors"),
            json.dumps(params),
            "2",
            str(marker),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.safetensors").exists()
    from codafeat._train.checkpoint import load_checkpoint

    _, meta = load_checkpoint(ckpt / "checkpoint.safetensors")
    assert meta["epochs_done"] == 2

    resumed = tmp_path / "resumed.safetensors"
    r = _run(folder, resumed, dict(params, resume=True))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(ref), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    hist = json.loads(Path(str(resumed) + ".history0.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(folder, out, params, world: int, record=None) -> None:
    """Start ``world`` gloo processes of the worker (as torchrun would) and wait for them."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        extra = {"CODA_RECORD_INDICES": str(record).format(rank=rank)} if record else {}
        env = _env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            **extra,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, str(folder), str(out), json.dumps(params)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(folder, tmp_path):
    # No stochastic depth: its masks are drawn per process and cannot match one process.
    params = dict(TINY, epochs=2, batch_size=8, device="cpu", drop_path_rate=0.0)
    single = tmp_path / "single.safetensors"
    r = _run(folder, single, params)
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "ddp.safetensors"
    _run_ranks(folder, out, params, 2)
    w0 = _weights(tmp_path / "ddp.rank0.safetensors")
    w1 = _weights(tmp_path / "ddp.rank1.safetensors")
    ref = _weights(single)
    for k in ref:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=f"ranks differ at {k}")
        torch.testing.assert_close(w0[k], ref[k], rtol=1e-4, atol=1e-6, msg=f"DDP vs single process at {k}")
    # The student moves ~250x faster than the EMA teacher: compare it too (heads included).
    s0 = _weights(tmp_path / "ddp.rank0.student.st")
    s1 = _weights(tmp_path / "single.student.st")
    assert s0.keys() == s1.keys()
    for k in s1:
        torch.testing.assert_close(s0[k], s1[k], rtol=1e-4, atol=2e-5, msg=f"DDP vs single-process student at {k}")
    h0 = json.loads(Path(str(out) + ".history0.json").read_text())
    h1 = json.loads(Path(str(single) + ".history0.json").read_text())
    for a, b in zip(h0, h1):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_gloo_processes_without_random_state_share_teacher_and_epoch(folder, tmp_path):
    """random_state=None (the README's torchrun command): every rank must draw rank 0's seed,
    distil from the same teacher, and one epoch must visit every image exactly once."""
    params = dict(TINY, epochs=2, batch_size=8, device="cpu", random_state=None)
    out = tmp_path / "ddp.safetensors"
    _run_ranks(folder, out, params, 2, record=tmp_path / "index{rank}.jsonl")
    t0 = _weights(tmp_path / "ddp.rank0.safetensors")
    t1 = _weights(tmp_path / "ddp.rank1.safetensors")
    for k in t0:
        torch.testing.assert_close(t0[k], t1[k], rtol=0, atol=0, msg=f"teachers differ across ranks at {k}")
    s0 = _weights(tmp_path / "ddp.rank0.student.st")
    s1 = _weights(tmp_path / "ddp.rank1.student.st")
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], rtol=0, atol=0, msg=f"students differ across ranks at {k}")
    seen: dict[int, list[int]] = {}
    for rank in range(2):
        for line in (tmp_path / f"index{rank}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            seen.setdefault(rec["epoch"], []).extend(rec["index"])
    n = 24  # 3 organs x 8 images, 3 global batches of 8 per epoch
    assert sorted(seen) == [0, 1]
    for epoch, idx in seen.items():
        assert sorted(idx) == list(range(n)), f"epoch {epoch} did not visit every image exactly once"
    assert seen[0] != seen[1], "the two epochs drew the same order"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_nodes_of_two_processes_match_one_process(folder, tmp_path):
    """``torchrun --nnodes 2 --nproc_per_node 2`` on localhost (4 gloo processes, two launchers as
    two "nodes", one rendezvous): the same weights as one process with the same global batch."""
    params = dict(TINY, epochs=1, batch_size=8, device="cpu", drop_path_rate=0.0)
    single = tmp_path / "single.safetensors"
    r = _run(folder, single, params)
    assert r.returncode == 0, r.stderr[-3000:]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "nodes.safetensors"
    launchers = []
    for node in range(2):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc_per_node",
            "2",
            "--node_rank",
            str(node),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
            WORKER,
            str(folder),
            str(out),
            json.dumps(params),
        ]
        launchers.append(
            subprocess.Popen(cmd, env=_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    for p in launchers:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    ref = _weights(single)
    ranks = [_weights(tmp_path / f"nodes.rank{r}.safetensors") for r in range(4)]
    for k in ref:
        for r in range(1, 4):
            torch.testing.assert_close(ranks[r][k], ranks[0][k], rtol=0, atol=0, msg=f"rank {r} differs at {k}")
        torch.testing.assert_close(ranks[0][k], ref[k], rtol=1e-4, atol=1e-6, msg=f"2 nodes vs 1 process at {k}")
