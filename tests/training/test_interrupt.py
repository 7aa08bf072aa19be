"""Interrupts save (fastasr.training.interrupt): a real SIGINT or SIGTERM to a training process group (the main
process and its DataLoader worker, as a terminal's Ctrl-C or a scheduler reaches them) ends training after the
current step with a checkpoint at that step, summary.json and loss.png, exit 130 / 143 and no traceback; --resume
continues from it. Under torchrun (2 ranks, gloo) both ranks stop at one agreed step and save it once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asr_helpers import make_shards

from fastasr.training import checkpoints as ckpt_io

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--preset", "tiny", "data.num_workers=1", "train.device=cpu", "train.progress=false", "train.log_every=5",
         "train.ckpt_every=1000", "train.val_every=1000", "model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.pred_embed=16",
         "model.pred_hidden=32", "model.joint_dim=24", "model.subsampling_channels=8", "data.max_batch_seconds=2.0",
         "data.val_utterances=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def started(run: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until the run has logged steps (train_log.csv has rows)."""
    log = run / "train_log.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            return
        time.sleep(0.2)
    raise AssertionError("training did not start")


def interrupted(cmd: list[str], run: Path, sig: int, timeout: float = 240.0) -> tuple[int, str, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        started(run, proc)
        os.killpg(proc.pid, sig)  # the whole group, workers too, as a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_step_and_resume_continues(shards, tmp_path, sig, code):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run),
           "--max-steps", "100000", *SMALL]
    rc, out, err = interrupted(cmd, run, sig)
    assert rc == code, err[-3000:]
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    ckpt = ckpt_io.load(run / "last.pt")
    assert summary["interrupted"] == signal.Signals(sig).name and ckpt["step"] == summary["steps"] > 0
    assert (run / "loss.png").is_file()
    assert f"interrupted ({signal.Signals(sig).name}) at step {ckpt['step']}" in err and "--resume" in err
    steps = ckpt["step"]
    done = subprocess.run([sys.executable, "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run),
                           "--resume", "--max-steps", str(steps + 3), *SMALL],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ckpt_io.load(run / "last.pt")["step"] == steps + 3


def test_torchrun_ranks_agree_on_the_step(shards, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run), "--max-steps", "100000",
           *SMALL]
    rc, out, err = interrupted(cmd, run, signal.SIGINT)
    summary = json.loads((run / "summary.json").read_text())
    ckpt = ckpt_io.load(run / "last.pt")
    assert summary["interrupted"] == "SIGINT" and ckpt["step"] == summary["steps"] > 0, err[-3000:]
    assert len(ckpt["data"]) == 2 and ckpt["rank_weight_digests"][0] == ckpt["rank_weight_digests"][1]
    assert ckpt["step"] % 5 == 0  # a sync point (train.log_every=5), where the ranks compared their flags
    assert len(list(run.glob("step-*.pt"))) <= 1
    ranks = [line for line in err.splitlines() if "fastasr train: interrupted" in line]
    assert len(ranks) == 1, err[-3000:]  # said once, by the main rank
    assert "Traceback" not in out, out[-3000:]
    assert not any("Traceback" in line and "[rank" in line for line in err.splitlines()), err[-3000:]
    assert rc in (130, 1), (rc, err[-3000:])
