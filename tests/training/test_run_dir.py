"""A run directory is one run: `train` into one that holds a run needs --resume, --resume needs a last.pt (and
--auto-resume starts fresh without one, saying so), every checkpoint carries the run's id across --resume, and
`average` refuses checkpoints of two runs, averages older ones without an id saying it could not check, and names
the steps it averaged."""

import shutil

import pytest
import torch
from asr_helpers import make_shards

from fastasr.cli import main
from fastasr.training import checkpoints as ckpt_io

CPU = ["train.device=cpu", "train.progress=false", "data.num_workers=0", "data.max_batch_seconds=2.5",
       "data.val_utterances=2", "model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.pred_embed=16",
       "model.pred_hidden=32", "model.joint_dim=24", "model.subsampling_channels=8", "model.dropout=0.0",
       "train.val_every=1000", "train.ckpt_every=1", "train.keep=5", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def train_argv(shards, run, steps, *flags):
    return ["train", "--data", str(shards), "--run-dir", str(run), "--max-steps", str(steps), *flags, *CPU]


def one_error_line(capsys, command="train") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"fastasr {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    """A run of 2 steps, then --auto-resume'd to 3 (a re-submitted job): step checkpoints 1, 2, 3."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_argv(shards, run, 2, "--auto-resume")) == 0  # nothing there yet: a fresh run
    assert main(train_argv(shards, run, 3, "--auto-resume")) == 0  # now last.pt: resumes
    return run


def test_auto_resume_starts_fresh_then_resumes_keeping_the_run_id(run):
    steps = [ckpt_io.load(p) for p in ckpt_io.step_checkpoints(run)]
    assert [c["step"] for c in steps] == [1, 2, 3]
    ids = {c["run_id"] for c in steps}
    assert len(ids) == 1 and isinstance(next(iter(ids)), str) and len(next(iter(ids))) == 32, ids
    assert ckpt_io.load(run / "last.pt")["run_id"] in ids


def test_auto_resume_says_it_starts_fresh(shards, tmp_path, capsys):
    assert main(train_argv(shards, tmp_path / "new", 1, "--auto-resume")) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "--auto-resume" in line]
    assert len(said) == 1 and "nothing to resume" in said[0] and str(tmp_path / "new" / "last.pt") in said[0], err


def test_a_second_run_into_a_run_directory_is_refused(shards, run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(train_argv(shards, run, 5)) == 2
    err = one_error_line(capsys)
    assert "already holds a run" in err and "--resume" in err and "fresh --run-dir" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written


@pytest.mark.parametrize("leftover", ["config.json", "train_log.csv", "val_log.csv", "step-0000004.pt"])
def test_a_run_without_last_pt_is_refused_too(shards, tmp_path, capsys, leftover):
    run = tmp_path / "run"
    run.mkdir()
    (run / leftover).write_text("x")
    for flags in ([], ["--resume"], ["--auto-resume"]):
        assert main(train_argv(shards, run, 1, *flags)) == 2, flags
        err = one_error_line(capsys)
        assert leftover in err and "fresh --run-dir" in err, (flags, err)
    assert sorted(p.name for p in run.iterdir()) == [leftover]


def test_resume_without_last_pt_names_the_path_and_writes_nothing(shards, tmp_path, capsys):
    assert main(train_argv(shards, tmp_path / "none", 1, "--resume")) == 2
    err = one_error_line(capsys)
    assert f"--resume: {tmp_path / 'none' / 'last.pt'} does not exist" in err and "--auto-resume" in err, err
    assert not (tmp_path / "none").exists()
    assert main(train_argv(shards, tmp_path / "none", 1, "--resume", "--auto-resume")) == 2
    assert "not both" in one_error_line(capsys)


def test_an_empty_existing_directory_is_a_new_run(shards, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")  # not a run's file
    assert main(train_argv(shards, tmp_path / "empty", 1)) == 0
    assert ckpt_io.load(tmp_path / "empty" / "last.pt")["step"] == 1


def test_average_names_the_steps_it_averaged(run, tmp_path, capsys):
    out = tmp_path / "avg.pt"
    assert main(["average", str(run), "--last", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "mean of steps 2, 3 (step-0000002.pt, step-0000003.pt)" in said, said
    assert "all of one run" in said, said
    averaged = ckpt_io.load(out)
    assert averaged["averaged_steps"] == [2, 3] and "averaged_unchecked" not in averaged
    assert averaged["run_id"] == ckpt_io.load(run / "last.pt")["run_id"]


def test_average_refuses_checkpoints_of_two_runs(run, shards, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(train_argv(shards, other, 4)) == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in ckpt_io.step_checkpoints(run):  # steps 1-3 of one run, then step 4 of another
        shutil.copy(p, mixed / p.name)
    shutil.copy(other / "step-0000004.pt", mixed)
    capsys.readouterr()
    assert main(["average", str(mixed), "--last", "3", "--out", str(tmp_path / "a.pt")]) == 2
    err = one_error_line(capsys, "average")
    assert "step-0000002.pt, step-0000003.pt (run " in err and "and step-0000004.pt (run " in err, err
    assert "of 2 runs" in err, err
    assert not (tmp_path / "a.pt").exists()
    assert main(["average", str(mixed), "--last", "1", "--out", str(tmp_path / "a.pt")]) == 0  # one run's: fine


def test_average_of_checkpoints_without_a_run_id_says_it_could_not_check(run, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    for p in ckpt_io.step_checkpoints(run)[-2:]:  # as fastasr wrote them before run ids
        ckpt = ckpt_io.load(p)
        del ckpt["run_id"]
        torch.save(ckpt, old / p.name)
    out = tmp_path / "avg.pt"
    assert main(["average", str(old), "--last", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "mean of steps 2, 3" in said and "could not be checked" in said, said
    assert "step-0000002.pt, step-0000003.pt carry no run id" in said, said
    with_ids = ckpt_io.average(run, 2)["model"]
    for k, v in ckpt_io.load(out)["model"].items():
        assert torch.equal(v, with_ids[k]), k  # averaged as before
