"""Step checkpoints and `fastasr average`: train.keep=N leaves exactly the newest N (last.pt the newest of them),
the average is the mean of the checkpoints it names, and a wrong run directory or --last is one UserError."""


import json

import pytest
import torch
from asr_helpers import make_config, make_shards

from fastasr.cli import main
from fastasr.model.checkpoint import load_model
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    shards = tmp_path_factory.mktemp("shards")
    make_shards(shards)
    run = tmp_path_factory.mktemp("run")
    # Checkpoints at steps 2, 4, 6 and the final 7; keep=3 prunes step 2 once step 7's is complete.
    train(shards, run, make_config(max_steps=7, ckpt_every=2, keep=3))
    return run


def test_keep_leaves_the_newest_n_and_last_is_the_newest(run):
    assert [p.name for p in ckpt_io.step_checkpoints(run)] == ["step-0000004.pt", "step-0000006.pt",
                                                              "step-0000007.pt"]
    assert not list(run.glob(".*.tmp"))
    last, newest = ckpt_io.load(run / "last.pt"), ckpt_io.load(run / "step-0000007.pt")
    assert last["step"] == 7
    # RUN/config.json, written at the start, holds the resolved settings the checkpoints carry, and a record of the
    # tokenizer (which the checkpoints carry whole).
    written = json.loads((run / "config.json").read_text())
    assert written.pop("tokenizer") == {"spec": "char", "type": "char", "vocab_size": 34}
    assert written == last["config"]
    for k, v in newest["model"].items():
        assert torch.equal(last["model"][k], v), k


def test_average_is_the_mean_of_the_checkpoints_it_read(run, tmp_path):
    out = tmp_path / "avg.pt"
    assert main(["average", str(run), "--last", "2", "--out", str(out)]) == 0
    averaged = ckpt_io.load(out)
    assert averaged["averaged_from"] == ["step-0000006.pt", "step-0000007.pt"]
    a, b = (ckpt_io.load(run / name)["model"] for name in averaged["averaged_from"])
    for k in a:
        # The reference: the plain float32 mean of the two, to float32 rounding of the float64 mean.
        torch.testing.assert_close(averaged["model"][k], (a[k] + b[k]) / 2, atol=1e-7, rtol=1e-6, msg=k)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the two differ, so the mean is a real test
    assert "optimizer" not in averaged and averaged["step"] == 7
    model, _, _ = load_model(out)  # what eval / transcribe / export read
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("what", ["missing run", "too few", "out is a dir"])
def test_average_mistakes_are_one_line_and_exit_2(run, tmp_path, capsys, what):
    argv = {"missing run": [str(tmp_path / "nope"), "--last", "2", "--out", str(tmp_path / "a.pt")],
            "too few": [str(run), "--last", "4", "--out", str(tmp_path / "a.pt")],
            "out is a dir": [str(run), "--last", "2", "--out", str(tmp_path)]}[what]
    assert main(["average", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastasr average: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "a.pt").exists()
