"""A 2-rank checkpoint resumes under 3 ranks, then under 1: the epoch finishes with every utterance exactly once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from asr_helpers import make_shards

from fastasr.training import checkpoints as ckpt_io

ROOT = Path(__file__).resolve().parents[2]
MICRO = ["--preset", "tiny", "train.device=cpu", "train.progress=false", "train.ckpt_every=1000", "train.keep=0",
         "model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.pred_embed=16", "model.pred_hidden=32",
         "model.joint_dim=24", "model.subsampling_channels=8", "data.max_batch_seconds=1.2", "data.num_workers=0",
         "data.val_utterances=2"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(shards, run, keys_dir, ranks: int, steps: int, resume: bool) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
                 str(_port())] if ranks > 1 else [sys.executable])
    cmd = [*launcher, str(ROOT / "tests" / "keys_worker.py"), "train", "--data", str(shards), "--run-dir", str(run),
           "--max-steps", str(steps), *(["--resume"] if resume else []), *MICRO]
    Path(keys_dir).mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTASR_TEST_KEYS_DIR=str(keys_dir),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _keys(keys_dir) -> list[tuple[int, str]]:
    rows = []
    for f in sorted(Path(keys_dir).glob("keys-*.tsv")):
        for line in f.read_text(encoding="utf-8").splitlines():
            epoch, key = line.split("\t")
            rows.append((int(epoch), key))
    return rows


@pytest.mark.slow
def test_resume_under_three_ranks_then_one_finishes_the_epoch_once(tmp_path):
    shards = tmp_path / "shards"
    make_shards(shards)
    run = tmp_path / "run"
    train_keys = {f"synth/{i % 3}/utt{i:04d}" for i in range(16)}  # make_shards' train split
    _train(shards, run, tmp_path / "a", ranks=2, steps=2, resume=False)
    assert len(ckpt_io.load(run / "last.pt")["data"]) == 2
    _train(shards, run, tmp_path / "b", ranks=3, steps=3, resume=True)
    assert len(ckpt_io.load(run / "last.pt")["data"]) == 3
    _train(shards, run, tmp_path / "c", ranks=1, steps=20, resume=True)
    seen = _keys(tmp_path / "a") + _keys(tmp_path / "b") + _keys(tmp_path / "c")
    epoch0 = [k for e, k in seen if e == 0]
    assert len(epoch0) == len(set(epoch0)), "an utterance trained on twice in epoch 0"
    assert set(epoch0) == train_keys, "an utterance of epoch 0 never trained on"
    assert {e for e, _ in _keys(tmp_path / "a")} == {0} and max(e for e, _ in seen) >= 1
