"""Resume means continue: the log rows and TensorBoard points an interrupted run wrote after its last checkpoint are
dropped, so every step appears once; a changed --max-steps on --resume is said in one line with the lr it implies;
a run that ends inside its lr warm-up says so."""

from __future__ import annotations

import csv
import logging
from dataclasses import replace

import pytest
from asr_helpers import Crash, crash_at, make_config, make_shards

from fastasr.training.loop import lr_at, progress_of, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def steps_logged(run) -> list[int]:
    with open(run / "train_log.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_every_step_logged_once_after_a_resume(shards, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Crash):  # killed during step 6; the last checkpoint is step 3's, steps 4 and 5 were logged
        train(shards, run, make_config(max_steps=8, ckpt_every=3), batch_hook=crash_at(5))
    assert steps_logged(run) == [1, 2, 3, 4, 5]
    train(shards, run, make_config(max_steps=8), resume=True)
    assert steps_logged(run) == list(range(1, 9))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))


def test_a_new_horizon_is_said_with_its_lr(shards, tmp_path, capsys):
    run = tmp_path / "run"
    first = make_config(max_steps=4, ckpt_every=4)
    train(shards, run, first)
    capsys.readouterr()
    longer = make_config(max_steps=12)
    train(shards, run, longer, resume=True)
    err = capsys.readouterr().err
    old = lr_at(4, progress_of(4, 0.0, first), first.optim)
    new = lr_at(4, progress_of(4, 0.0, longer), longer.optim)
    assert "--resume with max_steps 4 → 12: the cosine schedule now ends at step 12" in err
    assert f"the lr at step 4 is {new:.3g} (it was {old:.3g}" in err and old != new
    train(shards, run, longer, resume=True)  # the same limits again: nothing to say
    assert "cosine schedule" not in capsys.readouterr().err


def test_a_run_that_ends_in_its_warm_up_says_so(shards, tmp_path, caplog):
    config = make_config(max_steps=3)
    with caplog.at_level(logging.WARNING, logger="fastasr.train"):
        train(shards, tmp_path / "short", replace(config, optim=replace(config.optim, warmup_steps=10)))
    said = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert said and "optim.warmup_steps=10 >= --max-steps 3" in said[0] and "optim.warmup_steps=1" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastasr.train"):
        train(shards, tmp_path / "fine", config)  # warm-up 2 of 3 steps: it ends
    assert not [r for r in caplog.records if "warmup_steps" in r.getMessage()]
