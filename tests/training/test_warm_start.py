"""--init-from takes the weights only (lr=0 and one step leave them exactly the source's; the optimiser starts
fresh), re-initialises only the token-indexed layers for another vocabulary, and --resume refuses settings that
contradict the run instead of dropping them."""

import json
import logging
import shutil
from dataclasses import replace

import pytest
import torch
from asr_helpers import make_config, make_shards

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.loop import train
from fastasr.training.warm_start import VOCAB_PARAMS

CPU = ["train.device=cpu", "train.progress=false", "data.num_workers=0", "data.max_batch_seconds=2.5",
       "data.val_utterances=2", "train.keep=0"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


@pytest.fixture(scope="module")
def source(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("source")
    train(shards, run, make_config(max_steps=3))
    return run / "last.pt"


def test_init_from_with_lr_0_keeps_the_source_weights_and_a_fresh_optimiser(shards, source, tmp_path):
    # Only the data and device on the command line: the model settings come from the checkpoint.
    argv = ["train", "--data", str(shards), "--run-dir", str(tmp_path / "ft"), "--init-from", str(source),
            "--max-steps", "1", "optim.lr=0", *CPU]
    assert main(argv) == 0
    tuned, src = ckpt_io.load(tmp_path / "ft" / "last.pt"), ckpt_io.load(source)
    assert tuned["config"]["model"] == src["config"]["model"]
    for k, v in src["model"].items():
        assert torch.equal(tuned["model"][k], v), k
    assert src["step"] == 3 and tuned["step"] == 1
    assert all(float(s["step"]) == 1 for s in tuned["optimizer"]["state"].values())  # not the source's 3


def test_init_from_another_vocabulary_reinitialises_only_the_token_layers(shards, source, tmp_path, caplog):
    other = tmp_path / "shards"
    shutil.copytree(shards, other)
    index = json.loads((other / "index.json").read_text())
    index["text"]["alphabet"] += "ё"  # one more token; the texts encode as before
    (other / "index.json").write_text(json.dumps(index, ensure_ascii=False))
    config = make_config(max_steps=1)
    config = replace(config, optim=replace(config.optim, lr=0.0))
    with caplog.at_level(logging.INFO, logger="fastasr"):
        train(other, tmp_path / "ft", config, init_from=source)
    assert "re-initialised the joiner's output layer and the predictor's embedding" in caplog.text
    tuned, src = ckpt_io.load(tmp_path / "ft" / "last.pt")["model"], ckpt_io.load(source)["model"]
    for k, v in src.items():
        if k in VOCAB_PARAMS:
            assert tuned[k].shape[0] == v.shape[0] + 1, k
        else:
            assert torch.equal(tuned[k], v), k


def test_init_from_a_different_architecture_is_refused(shards, source, tmp_path):
    config = make_config(max_steps=1)
    config = replace(config, model=replace(config.model, d_model=64))
    with pytest.raises(UserError, match="model.d_model=64"):
        train(shards, tmp_path / "ft", config, init_from=source)


def test_resume_refuses_a_contradicting_setting(shards, source, capsys):
    run = str(source.parent)
    before = source.stat().st_mtime_ns
    common = ["train", "--data", str(shards), "--run-dir", run, "--resume", *CPU]
    assert main([*common, "model.d_model=64", "optim.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastasr train: error: --resume") and err.count("\n") == 1, err
    assert "model.d_model=64 (the run has 32), optim.lr=0.001 (the run has 0.003)" in err, err
    # Without settings the run's own are taken (no --preset or model overrides needed), and it resumes.
    assert main([*common, "--max-steps", "3"]) == 0
    assert source.stat().st_mtime_ns == before  # already at step 3: nothing to train, nothing rewritten
