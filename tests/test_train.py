"""Training: resume equals an uninterrupted run, non-finite steps are skipped and counted, 2-rank torchrun (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastasr import checkpoint as ckpt_io
from fastasr.train import train

from asr_helpers import make_shards, make_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def weights(run):
    return ckpt_io.load(Path(run) / "last.pt")["model"]


def assert_same(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k, **tol)


class Crash(Exception):
    pass


def crash_at(step_to_crash):
    def hook(step, batch):
        if step == step_to_crash:
            raise Crash(step)
        return batch

    return hook


def test_resume_matches_uninterrupted_run(shards, tmp_path):
    full = train(shards, tmp_path / "full", make_config(max_steps=8))
    # The same run killed during step 5: its last checkpoint is step 3's (ckpt_every=3).
    with pytest.raises(Crash):
        train(shards, tmp_path / "split", make_config(max_steps=8, ckpt_every=3), batch_hook=crash_at(4))
    first = ckpt_io.load(tmp_path / "split" / "last.pt")
    assert first["step"] == 3 and first["data"][0]["batches"] >= 1
    resumed = train(shards, tmp_path / "split", make_config(max_steps=8), resume=True)
    assert full["steps"] == resumed["steps"] == 8
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "split"), atol=1e-6, rtol=1e-5)
    # A run that crossed an epoch boundary (16 train utterances, ~2.5 s batches) still lines up.
    assert ckpt_io.load(tmp_path / "split" / "last.pt")["data"] == ckpt_io.load(tmp_path / "full" / "last.pt")["data"]
    for name in ("train_log.csv", "loss.png", "summary.json"):
        assert (tmp_path / "full" / name).exists()


def test_nonfinite_batch_is_skipped_and_counted(shards, tmp_path):
    def poison(step, batch):
        if step == 2:
            batch.audio[0, : batch.audio_lens[0]] = float("nan")
        return batch

    # The clean run stops (crashes) right after step 2's checkpoint, on the same lr schedule (max_steps=3).
    with pytest.raises(Crash):
        train(shards, tmp_path / "clean", make_config(max_steps=3, ckpt_every=2), batch_hook=crash_at(2))
    bad = train(shards, tmp_path / "bad", make_config(max_steps=3), batch_hook=poison)
    assert bad["skipped_steps"] == 1 and bad["steps"] == 3
    assert ckpt_io.load(tmp_path / "bad" / "last.pt")["progress"]["skipped_steps"] == 1
    # The skipped step touched neither the weights nor the optimiser state.
    assert_same(weights(tmp_path / "clean"), weights(tmp_path / "bad"), atol=0, rtol=0)
    opt_clean = ckpt_io.load(tmp_path / "clean" / "last.pt")["optimizer"]["state"]
    opt_bad = ckpt_io.load(tmp_path / "bad" / "last.pt")["optimizer"]["state"]
    for k in opt_clean:
        for name in opt_clean[k]:
            torch.testing.assert_close(opt_clean[k][name], opt_bad[k][name], atol=0, rtol=0)


def test_torchrun_two_ranks_gloo(shards, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run), "--preset", "tiny",
           "--max-steps", "5", "train.device=cpu", "train.progress=false", "train.ckpt_every=3",
           "model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.pred_embed=16", "model.pred_hidden=32",
           "model.joint_dim=24", "model.subsampling_channels=8", "data.max_batch_seconds=2.0",
           "data.num_workers=0", "data.val_utterances=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = ckpt_io.load(run / "last.pt")
    assert ckpt["step"] == 5 and len(ckpt["data"]) == 2 and len(ckpt["rng"]) == 2
    digests = ckpt["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], digests
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 5
