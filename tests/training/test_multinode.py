"""Multi-node training: two torchrun launches on this machine are two "nodes" meeting at a c10d rendezvous (gloo,
CPU). A clean job finishes on both; a rank that is SIGKILLed or raises ends both nodes non-zero long before
`train.dist_timeout_s` (the peers' failed collectives), its error named by rank; a node that hangs ends the other
one after that timeout instead of never."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from asr_helpers import make_shards
from http_shards import ShardServer

from fastasr.training import checkpoints as ckpt_io

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "multinode_worker.py"
MICRO = ["--preset", "tiny", "train.device=cpu", "train.progress=false", "train.threads=1", "model.d_model=32",
         "model.n_heads=2", "model.n_layers=2", "model.pred_embed=16", "model.pred_hidden=32", "model.joint_dim=24",
         "model.subsampling_channels=8", "data.max_batch_seconds=2.0", "data.num_workers=0",
         "data.val_utterances=2"]
HUNG_S = 150  # a job still running after this is hung: the test fails and kills it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The `--data` the jobs read: a shard directory served over HTTP by a real server on 127.0.0.1, as a node
    without the shards on its disk reads them."""
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    with ShardServer(out) as server:
        yield server.url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """One `torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d …` launch, its output in a file."""

    def __init__(self, name: str, tmp: Path, port: int, rdzv_id: str, args: list[str], env: dict | None = None):
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id,
               "--monitor-interval", "0.5",  # polling at the default 0.1 s takes CPU these 2 cores lack
               str(WORKER), "train", *args]
        full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env or {}))
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        self.ended_at: float | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def launch(tmp: Path, args: list[str], fault: str | None = None) -> tuple[Node, Node, Path]:
    """Node a, which hosts the rendezvous store (it starts first), and node b, which gets `fault` if any."""
    port, rdzv_id, stamp = free_port(), uuid.uuid4().hex[:12], tmp / "fault-stamp"
    a = Node("a", tmp, port, rdzv_id, args)
    deadline = time.monotonic() + 60
    while not listening(port):
        assert a.proc.poll() is None and time.monotonic() < deadline, a.output()
        time.sleep(0.1)
    env = {"FASTASR_TEST_FAULT": fault, "FASTASR_TEST_FAULT_STAMP": str(stamp)} if fault else None
    return a, Node("b", tmp, port, rdzv_id, args, env), stamp


def wait(*nodes: Node) -> None:
    """Wait for the nodes to end, recording when each ends; fail (and end them) if they hang."""
    deadline = time.monotonic() + HUNG_S
    try:
        while any(n.proc.poll() is None for n in nodes):
            assert time.monotonic() < deadline, "hung:\n" + "\n".join(n.output()[-3000:] for n in nodes)
            for n in nodes:
                if n.ended_at is None and n.proc.poll() is not None:
                    n.ended_at = time.time()
            time.sleep(0.1)
        for n in nodes:
            if n.ended_at is None and n.proc.poll() is not None:
                n.ended_at = time.time()
    finally:  # a hung launch: SIGTERM lets its agent stop its workers (their own sessions), then SIGKILL
        for n in nodes:
            if n.proc.poll() is None:
                n.proc.terminate()
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()


def test_two_nodes_train_and_both_exit_zero(data, tmp_path):
    run = tmp_path / "run"
    a, b, _ = launch(tmp_path, ["--data", data, "--run-dir", str(run), "--max-steps", "10", *MICRO])
    wait(a, b)
    assert a.proc.returncode == 0 and b.proc.returncode == 0, a.output()[-3000:] + b.output()[-3000:]
    ckpt = ckpt_io.load(run / "last.pt")
    assert ckpt["step"] == 10 and len(ckpt["data"]) == 2
    assert ckpt["rank_weight_digests"][0] == ckpt["rank_weight_digests"][1]  # DDP across the two "nodes"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10


@pytest.mark.parametrize("kind", ["kill", "raise"])
def test_a_failing_rank_ends_both_nodes_long_before_the_timeout(data, tmp_path, kind):
    timeout_s = 30.0
    a, b, stamp = launch(tmp_path, ["--data", data, "--run-dir", str(tmp_path / "run"), "--max-steps", "400",
                                    *MICRO, f"train.dist_timeout_s={timeout_s}"], fault=f"3:{kind}")
    wait(a, b)
    out_a, out_b = a.output(), b.output()
    assert stamp.exists(), out_a[-3000:] + out_b[-3000:]  # the fault happened (in step 3, not at start-up)
    failed_at = float(stamp.read_text().split()[0])
    assert a.proc.returncode != 0 and b.proc.returncode != 0, out_a[-3000:] + out_b[-3000:]
    # The peer's next collective fails at once (its connection closed): nothing waits out the timeout.
    for n in (a, b):
        assert n.ended_at - failed_at < timeout_s, (n.ended_at - failed_at, n.output()[-3000:])
    # Each rank that ended on an exception says which rank it was; the survivor's error is its failed collective.
    assert "failed: InjectedFault" not in out_a and "/2 (local rank 0 on " in out_a and "failed: " in out_a
    if kind == "raise":
        assert "/2 (local rank 0 on " in out_b and "failed: InjectedFault: injected at step 3" in out_b
        assert "Traceback (most recent call last)" in out_b and "multinode_worker.py" in out_b
    else:
        assert "Signal 9 (SIGKILL)" in out_b


def test_a_hung_node_ends_the_other_after_the_timeout(data, tmp_path):
    timeout_s = 10.0
    a, b, stamp = launch(tmp_path, ["--data", data, "--run-dir", str(tmp_path / "run"), "--max-steps", "400",
                                    *MICRO, f"train.dist_timeout_s={timeout_s}"], fault="3:freeze")
    try:
        wait(a)
    finally:  # node b is stopped, agent and worker: end both (the worker's pid is in the stamp)
        if stamp.exists():
            os.kill(int(stamp.read_text().split()[1]), signal.SIGKILL)
        if b.proc.poll() is None:
            b.proc.kill()
        b.proc.wait()
    out_a = a.output()
    hung_at = float(stamp.read_text().split()[0])
    assert a.proc.returncode != 0, out_a[-3000:]
    # Not before the timeout (the peer's sockets stayed open: only the timeout can tell), and not much after it.
    assert timeout_s - 1 < a.ended_at - hung_at < timeout_s + 20, (a.ended_at - hung_at, out_a[-3000:])
    assert "/2 (local rank 0 on " in out_a and "failed: " in out_a
