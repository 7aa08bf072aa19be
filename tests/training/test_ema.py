"""EMA of the weights (train.ema_decay): the average equals a float64 recurrence over the weights each step left, a
skipped (non-finite) step leaves it untouched on the device, resume continues it exactly, the host never waits for
it between sync points, and RUN/ema.pt is a checkpoint that eval and --init-from read."""

import copy
from dataclasses import replace

import pytest
import torch
from asr_helpers import Crash, NoAugment, batch, count_read_backs, crash_at, make_config, make_shards, tiny_model

from fastasr.errors import UserError
from fastasr.model.checkpoint import load_model
from fastasr.model.transducer import log_mel
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.config import OptimConfig, preset
from fastasr.training.loop import train
from fastasr.training.step import EMA, StepParts, make_optimizer, train_step

DECAY = 0.8  # short runs: with the warm-up min(0.8, (1+n)/(10+n)) both branches of the decay occur within 8 steps


def ema_config(**train_settings):
    config = make_config(**train_settings)
    return replace(config, train=replace(config.train, ema_decay=DECAY))


def recurrence(snapshots: list[dict], kept: list[bool], decay: float) -> dict:
    """The average computed on the host in float64 from the weights after each step (snapshots[0]: the start)."""
    avg = {k: v.double().clone() for k, v in snapshots[0].items()}
    n = 0
    for weights, keep in zip(snapshots[1:], kept):
        if not keep:
            continue
        d = min(decay, (1 + n) / (10 + n))
        avg = {k: d * avg[k] + (1 - d) * weights[k].double() for k in avg}
        n += 1
    return avg


def assert_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].double(), b[k].double(), msg=k, **tol)


def test_ema_equals_the_float64_recurrence_and_a_skipped_step_leaves_it_alone():
    model = tiny_model().train()
    parts = StepParts(model, model, make_optimizer(model, OptimConfig(weight_decay=0.01)), log_mel(model.config),
                      NoAugment(), torch.autocast("cpu", enabled=False), grad_clip=1e9, world=1,
                      device=torch.device("cpu"), ema=EMA(model, DECAY))
    snapshots, kept = [copy.deepcopy(model.state_dict())], []
    for i in range(7):
        b = batch([8000, 5000, 6000], [4, 2, 3], seed=i)
        b.audio = b.audio.float()
        if i == 4:
            b.audio[1, :200] = float("nan")
            before = {k: v.clone() for k, v in parts.ema.state_dict().items()}
        _, _, skip = train_step(parts, [b], lr=3e-3)
        snapshots.append(copy.deepcopy(model.state_dict()))
        kept.append(float(skip) == 0.0)
        if i == 4:
            assert not kept[-1]
            assert_close(parts.ema.state_dict(), before, atol=0, rtol=0)  # bit for bit
    assert kept == [True] * 4 + [False] + [True] * 2 and parts.ema.updates_done() == 6
    reference = recurrence(snapshots, kept, DECAY)
    assert_close(parts.ema.state_dict(), reference, atol=1e-6, rtol=1e-5)
    # Not trivially equal to the weights or the start: the average lags behind the weights.
    last, first = snapshots[-1]["joiner.out.weight"], snapshots[0]["joiner.out.weight"]
    ema = parts.ema.state_dict()["joiner.out.weight"]
    assert (ema - last).abs().max() > 1e-4 and (ema - first).abs().max() > 1e-4


def test_buffers_are_copied_unless_the_step_is_skipped():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, 0.9)
    net(torch.randn(8, 3))  # training-mode forward: the running statistics move
    ema.update(torch.tensor(1.0))
    assert not torch.equal(ema.state_dict()["1.running_mean"], net.state_dict()["1.running_mean"])
    assert int(ema.state_dict()["1.num_batches_tracked"]) == 0
    ema.update(torch.tensor(0.0))
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(ema.state_dict()[k], net.state_dict()[k]), k


def test_the_update_reads_nothing_back():
    # Every aten op of an update, skipped or not: a tensor turned into a Python number (what a read-back of a device
    # tensor is, e.g. a 0-dim weight taken as a Scalar argument) dispatches _local_scalar_dense.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, 0.9)
    for skip in (0.0, 1.0):
        with Ops() as ops:
            ema.update(torch.tensor(skip))
        assert "aten._foreach_lerp_.List" in ops.seen
        assert not [op for op in ops.seen if "_local_scalar_dense" in op or op.startswith("aten.item")], ops.seen


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def test_training_writes_ema_and_a_skipped_step_leaves_it_unchanged(shards, tmp_path):
    def poison(step, batch):
        if step == 2:
            batch.audio[0, : batch.audio_lens[0]] = float("nan")
        return batch

    # The clean run stops right after step 2's checkpoint; the bad run's third step is non-finite and skipped.
    with pytest.raises(Crash):
        train(shards, tmp_path / "clean", ema_config(max_steps=3, ckpt_every=2), batch_hook=crash_at(2))
    bad = train(shards, tmp_path / "bad", ema_config(max_steps=3), batch_hook=poison)
    assert bad["skipped_steps"] == 1
    clean, poisoned = (ckpt_io.load(tmp_path / run / "last.pt") for run in ("clean", "bad"))
    assert clean["progress"]["ema_updates"] == poisoned["progress"]["ema_updates"] == 2
    assert_close(clean["ema"], poisoned["ema"], atol=0, rtol=0)
    # ema.pt is the average as a plain checkpoint, written with last.pt; the average is not the weights.
    ema_pt = ckpt_io.load(tmp_path / "bad" / "ema.pt")
    assert_close(ema_pt["model"], poisoned["ema"], atol=0, rtol=0)
    assert ema_pt["step"] == 3 and ema_pt["ema_of"] == {"step": 3, "updates": 2, "decay": DECAY}
    assert not set(ckpt_io.RESUME_ONLY) & set(ema_pt)
    assert any(not torch.equal(poisoned["ema"][k], poisoned["model"][k]) for k in poisoned["model"])


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """An 8-step run with the EMA on, every tensor read-back the step code makes counted by step (test_train.py's
    counter): (run directory, reads). The uninterrupted run the resume test compares with."""

    reads, at = [], {"step": None}

    def label(step, batch):
        at["step"] = step + 1
        return batch

    run = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        count_read_backs(mp.setattr, reads, at)
        train(shards, run, ema_config(max_steps=8, log_every=4, ckpt_every=4), batch_hook=label)
    return run, reads


def test_the_host_does_not_wait_for_the_ema_between_sync_points(reference):
    _, reads = reference
    assert not [r for r in reads if r[0] is not None and r[0] % 4], reads
    assert (4, "__int__", "updates_done") in reads  # the counter is read at the checkpoints, which are sync points


def test_resume_continues_the_ema_exactly(reference, shards, tmp_path):
    with pytest.raises(Crash):
        train(shards, tmp_path / "split", ema_config(max_steps=8, ckpt_every=3), batch_hook=crash_at(4))
    assert ckpt_io.load(tmp_path / "split" / "last.pt")["progress"]["ema_updates"] == 3
    train(shards, tmp_path / "split", ema_config(max_steps=8), resume=True)
    full, split = (ckpt_io.load(run / "last.pt") for run in (reference[0], tmp_path / "split"))
    assert full["progress"]["ema_updates"] == split["progress"]["ema_updates"] == 8
    # The tolerance of the weights' own resume test (test_train.py): the same arithmetic, other thread timings.
    assert_close(full["ema"], split["ema"], atol=1e-6, rtol=1e-5)
    assert_close(ckpt_io.load(tmp_path / "split" / "ema.pt")["model"], full["ema"], atol=1e-6, rtol=1e-5)


def test_ema_pt_evaluates_and_initialises_a_run(reference, shards, tmp_path):
    from fastasr.inference.evaluate import evaluate

    ema_pt = reference[0] / "ema.pt"
    model, _, _ = load_model(ema_pt)
    assert_close(model.state_dict(), ckpt_io.load(reference[0] / "last.pt")["ema"], atol=0, rtol=0)
    metrics = evaluate(ema_pt, shards, "test", tmp_path / "eval")
    assert metrics["utterances"] == 5 and 0 <= metrics["cer"] and (tmp_path / "eval" / "metrics.json").exists()
    train(shards, tmp_path / "fine", make_config(max_steps=1), init_from=ema_pt)


def test_ema_decay_is_checked():
    assert preset("tiny", ["train.ema_decay=0.999"]).train.ema_decay == 0.999
    with pytest.raises(UserError, match="train.ema_decay"):
        preset("tiny", ["train.ema_decay=1.0"])
