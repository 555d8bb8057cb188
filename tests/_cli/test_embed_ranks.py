"""``torchrun -m codafeat embed`` (codafeat/_cli/embed_ranks.py): shares, agreement, gathering, outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from codafeat import CodaEncoder
from codafeat._cli.embed_ranks import shares
from codafeat.cli import main
from codafeat.data.manifest import write_image_folder
from codafeat.phantoms import make_radiograph_phantoms

ROOT = Path(__file__).resolve().parents[2]


@given(st.integers(0, 500), st.integers(1, 9), st.integers(1, 64))
def test_shares_cover_the_inputs_in_order_in_whole_batches(n, world, batch):
    split = shares(n, world, batch)
    assert len(split) == world and split[0][0] == 0 and split[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(split, split[1:])), "contiguous, in order"
    assert all(lo % batch == 0 or lo == n for lo, _ in split), "every share starts on a batch boundary"
    sizes = [hi - lo for lo, hi in split]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= batch, "balanced to within one batch"


def test_shares_refuse_a_batch_size_below_one():
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        shares(10, 2, 0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    weights = CodaEncoder(backbone="test_convnext", image_size=32, random_state=0).fit().save(root / "w.safetensors")
    X, organ = make_radiograph_phantoms(
        5, organs=("chest", "hand"), image_size=32, random_state=0, return_variants=False
    )
    data = write_image_folder(X, organ, root / "data")  # 10 images: batches of 4 do not split evenly over 2 ranks
    return {"root": root, "weights": str(weights), "data": str(data)}


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _args(setup, out, *extra):
    return [
        "embed",
        setup["data"],
        "--out",
        str(out),
        "--weights",
        setup["weights"],
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--verbose",
        "0",
        *extra,
    ]


def _torchrun(args, nproc=2, timeout=300) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "codafeat",
        *args,
    ]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_two_gloo_processes_write_the_bytes_of_one_process(setup, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    one, two = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    assert main(_args(setup, one)) == 0
    r = _torchrun(_args(setup, two))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _same_bytes(one, two), f"{suffix}: two processes differ from one"
    if suffix == ".npy":
        assert _same_bytes(tmp_path / "one.paths.txt", tmp_path / "two.paths.txt")
    assert "over 2 processes" not in r.stderr, "no images were skipped"


@pytest.mark.slow
def test_one_failing_rank_ends_the_job_by_name_and_writes_nothing(setup, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for organ in ("chest", "hand"):
        src = Path(setup["data"]) / organ
        (data / organ).mkdir()
        for f in sorted(src.iterdir()):
            (data / organ / f.name).write_bytes(f.read_bytes())
    (data / "hand" / "zz_corrupt.png").write_bytes(b"not an image")  # the last image: rank 1's share
    out = tmp_path / "feats.npy"
    args = _args(setup, out)
    args[1] = str(data)
    r = _torchrun(args)
    assert r.returncode != 0
    assert "embedding failed on rank 1 of 2" in r.stderr and "zz_corrupt.png" in r.stderr
    assert not out.exists() and not (tmp_path / "feats.paths.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"

    cache = tmp_path / "cache"
    r = _torchrun([*args, "--on-error", "skip", "--cache", str(cache)])
    assert r.returncode == 0, r.stderr[-3000:]
    emb = np.load(out)
    assert emb.shape == (11, 64) and np.isnan(emb[-1]).all() and np.isfinite(emb[:-1]).all()
    assert "1 unreadable image(s) as NaN rows over 2 processes" in r.stderr
    entries = {p: p.stat().st_mtime_ns for p in cache.rglob("*.emb")}
    assert len(entries) == 10, "both ranks wrote their rows to the shared cache"
    out2 = tmp_path / "again.npy"
    args2 = [*args, "--on-error", "skip", "--cache", str(cache)]
    args2[args2.index("--out") + 1] = str(out2)
    r = _torchrun(args2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.emb")} == entries, "a second run only reads the cache"
    np.testing.assert_array_equal(np.load(out2), emb)


@pytest.mark.slow
def test_two_nodes_write_the_bytes_of_one_process(setup, tmp_path):
    """``torchrun --nnodes 2`` on localhost (two launchers as two nodes, one rendezvous)."""
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    assert main(_args(setup, one)) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(node),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "-m",
                "codafeat",
                *_args(setup, two),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for node in range(2)
    ]
    for p in launchers:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    assert _same_bytes(one, two)


COUNTS = [[5, 3, 0], [0, 0, 1], [4, 4, 4], [0, 0, 0]]


def _gather_worker(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist

    from codafeat._train import dist as D

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    info = D.DistInfo(rank, world, rank, True)
    for counts in COUNTS:
        start = sum(counts[:rank])
        rows = torch.arange(start, start + counts[rank], dtype=torch.float32)[:, None].repeat(1, 3)
        out = D.gather_rows(rows, counts, info, chunk_bytes=2 * 12)  # two rows per chunk: several rounds
        if rank == 0:
            queue.put(out.numpy())
        else:
            assert out is None
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_rows_returns_every_rank_in_order_over_several_chunks(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_gather_worker, args=(r, 3, init, queue)) for r in range(3)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=120) for _ in COUNTS]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for counts, rows in zip(COUNTS, got):
        expected = np.repeat(np.arange(sum(counts), dtype=np.float32)[:, None], 3, axis=1)
        np.testing.assert_array_equal(rows, expected.reshape(-1, 3), err_msg=str(counts))


@pytest.mark.slow
def test_a_failure_on_rank_zero_ends_every_rank(setup, tmp_path):
    notes = tmp_path / "notes.npy"
    notes.write_text("my notes, not embeddings", encoding="utf-8")
    r = _torchrun(_args(setup, notes))
    assert r.returncode != 0
    assert "checking the output and listing the images failed on rank 0 of 2" in r.stderr and "notes.npy" in r.stderr
    assert notes.read_text(encoding="utf-8") == "my notes, not embeddings"
