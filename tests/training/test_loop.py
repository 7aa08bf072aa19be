"""Training: resume equals an uninterrupted run, non-finite steps are skipped (on the device) and counted, the host
waits for the device only at sync points (with and without accumulation), 2-rank torchrun (gloo)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from asr_helpers import Crash, count_read_backs, crash_at, make_config, make_shards

from fastasr.training import checkpoints as ckpt_io
from fastasr.training.loop import train

ROOT = Path(__file__).resolve().parents[2]


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


def test_resume_with_accumulation_continues_at_the_next_batch(shards, tmp_path):
    # Checkpoints fall between optimiser steps, so the loader position (batches consumed) is a whole number of
    # accum_steps-batch steps, across the epoch boundary too (~5 batches an epoch, 8 batches here).
    def accumulating(**train_settings):
        config = make_config(**train_settings)
        return replace(config, optim=replace(config.optim, accum_steps=2))

    train(shards, tmp_path / "full", accumulating(max_steps=4))
    with pytest.raises(Crash):
        train(shards, tmp_path / "split", accumulating(max_steps=4, ckpt_every=2), batch_hook=crash_at(2))
    train(shards, tmp_path / "split", accumulating(max_steps=4), resume=True)
    full, split = (ckpt_io.load(tmp_path / run / "last.pt") for run in ("full", "split"))
    assert full["step"] == split["step"] == 4 and full["data"] == split["data"]
    assert_same(full["model"], split["model"], atol=1e-6, rtol=1e-5)


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
           "optim.accum_steps=2",  # no_sync on the first micro-batch; the equal digests show the last one synced
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


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_host_waits_for_the_device_only_at_sync_points(shards, tmp_path, monkeypatch, accum_steps):
    # Every read-back a tensor offers, counted when the training code calls it (the loss's one length read-back and
    # torch's own internals are elsewhere), labelled with the step count the loop has reached.
    reads, at, batches = [], {"step": None}, []

    def label(step, batch):
        at["step"] = step + 1
        batches.append(step)
        return batch

    count_read_backs(monkeypatch.setattr, reads, at)
    config = make_config(max_steps=8, log_every=4, progress=True)
    config = replace(config, optim=replace(config.optim, accum_steps=accum_steps))
    summary = train(shards, tmp_path / "run", config, batch_hook=label)
    monkeypatch.undo()
    assert summary["steps"] == 8  # optimiser steps, each of accum_steps batches
    assert batches == [s for s in range(8) for _ in range(accum_steps)]
    between = [r for r in reads if r[0] is not None and r[0] % 4]
    assert not between, f"read-backs between sync points: {between}"
    # The counter does see the training code: the window read-back at both sync points, validation's loss at the end.
    assert (4, "tolist", "read") in reads and (8, "tolist", "read") in reads
    assert (8, "__float__", "validate") in reads


def test_the_delay_penalty_starts_after_the_warm_up(shards, tmp_path, monkeypatch):
    from fastasr.training import loop

    seen, real = [], loop.train_step

    def spy(parts, batches, lr):
        seen.append(parts.delay_penalty)
        return real(parts, batches, lr)

    monkeypatch.setattr(loop, "train_step", spy)
    config = make_config(max_steps=5, delay_penalty=0.01)
    train(shards, tmp_path / "run", replace(config, optim=replace(config.optim, warmup_steps=3)))
    assert seen == [0.0, 0.0, 0.0, 0.01, 0.01]


def test_time_limit_is_decided_at_a_sync_point(shards, tmp_path):
    summary = train(shards, tmp_path / "run", make_config(max_steps=50, max_minutes=1e-6, log_every=3))
    assert summary["steps"] == 3


def test_skip_flag_leaves_fused_adamw_untouched_and_old_state_loads_fused():
    from fastasr.training.config import OptimConfig
    from fastasr.training.step import load_optimizer_state, make_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    # What older checkpoints hold: a non-fused AdamW with the same two groups, one step taken.
    old = torch.optim.AdamW([{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias],
                                                                              "weight_decay": 0.0}], lr=1e-2)
    model(torch.randn(4, 3)).square().sum().backward()
    old.step()
    opt = make_optimizer(model, OptimConfig(weight_decay=0.1))
    load_optimizer_state(opt, old.state_dict())
    assert all(g["fused"] for g in opt.param_groups)

    def snapshot():
        return ({k: v.clone() for k, v in model.state_dict().items()},
                {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()})

    before = snapshot()
    opt.grad_scale, opt.found_inf = None, torch.tensor(1.0)
    opt.step()
    after = snapshot()
    assert_same(before[0], after[0], atol=0, rtol=0)
    for i in before[1]:
        assert_same(before[1][i], after[1][i], atol=0, rtol=0)
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    assert not torch.equal(model.weight, before[0]["weight"])
    assert all(float(s["step"]) == 2 for s in opt.state_dict()["state"].values())


def test_validation_subset_reads_the_heads_of_a_few_shards_spread_over_val(tmp_path, monkeypatch):
    # Not the first batches (one length bucket's): the first utterances of VAL_SHARDS shards spread over val, and
    # the other shards are never opened (a bounded read when val is remote).
    import tarfile

    from fastasr import sources
    from fastasr.training.setup import VAL_SHARDS, load_val_subset

    assert VAL_SHARDS == 4
    index = make_shards(tmp_path, {"train": [3], "val": [3, 2, 4, 3, 2, 3]})
    heads = []
    for shard in index["splits"]["val"]["shards"]:
        with tarfile.open(tmp_path / shard["path"]) as tar:
            heads.append([m.name[:-len(".json")] for m in tar if m.name.endswith(".json")])
    opened = []
    real_open = sources.open_input
    monkeypatch.setattr(sources, "open_input", lambda url, *a, **k: opened.append(url) or real_open(url, *a, **k))
    config = make_config()
    config = replace(config, data=replace(config.data, val_utterances=7))
    keys = [k for batch in load_val_subset(tmp_path, config) for k in batch.keys]
    # shards 0, 1, 3, 4 of 6 (i * 6 // 4); shares of 7: 2, 2 (shard 1 holds 2), 2, 1 (the rest, shard 4 holds 2)
    assert sorted(keys) == sorted(heads[0][:2] + heads[1][:2] + heads[3][:2] + heads[4][:1])
    assert sorted(Path(u).name for u in opened if "/val/" in u) == [f"shard-00000{i}.tar" for i in (0, 1, 3, 4)]
