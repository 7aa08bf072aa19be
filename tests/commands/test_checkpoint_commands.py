"""Every command that reads a checkpoint reads it as data only: a file whose unpickling would run code, random
bytes or a foreign pickle are one line naming the file (exit 2) and the code never runs; `average --out` names a
file, not a directory."""

import os
import pickle

import pytest
from asr_helpers import make_shards
from checkpoint_helpers import hostile_checkpoint
from export_helpers import write_audio

from fastasr.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out, {"train": [3], "val": [2], "test": [2]})
    return out


def commands(ckpt, tmp_path, shards):
    """Each command line that reads `ckpt` (a file placed where each command looks for it)."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    for name in ("step-0000002.pt", "step-0000004.pt", "last.pt"):
        (run / name).write_bytes(ckpt.read_bytes())
    audio = write_audio(tmp_path / "a.wav", 0.5, 1)
    return [["eval", "--checkpoint", str(ckpt), "--data", str(shards)],
            ["transcribe", "--checkpoint", str(ckpt), str(audio)],
            ["export", str(ckpt), "--out", str(tmp_path / "exp")],
            ["average", str(run), "--last", "2", "--out", str(tmp_path / "avg.pt")],
            ["train", "--data", str(shards), "--run-dir", str(tmp_path / "new"), "--init-from", str(ckpt)],
            ["train", "--print-config", "--init-from", str(ckpt)],
            ["train", "--data", str(shards), "--run-dir", str(run), "--resume"]]


def test_a_checkpoint_that_would_run_code_is_refused_by_every_command(shards, tmp_path, capsys):
    marker = tmp_path / "marker"
    ckpt = hostile_checkpoint(tmp_path / "hostile.pt", marker)
    for argv in commands(ckpt, tmp_path, shards):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ".pt: holds Python objects" in err and "convert-checkpoint" in err, (argv, err)
        assert not marker.exists(), argv
    assert not (tmp_path / "exp").exists() and not (tmp_path / "avg.pt").exists()


def test_convert_checkpoint_runs_no_code_either(tmp_path, capsys):
    """convert-checkpoint allows NumPy's arrays and scalars besides tensors, nothing else: the payload is refused."""
    marker = tmp_path / "marker"
    ckpt = hostile_checkpoint(tmp_path / "hostile.pt", marker)
    assert main(["convert-checkpoint", str(ckpt), str(tmp_path / "new.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other than an older fastasr's NumPy state" in err, err
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


@pytest.mark.parametrize("kind", ["random", "foreign_pickle"])
def test_random_bytes_or_a_foreign_pickle_is_one_line_naming_the_file(shards, tmp_path, capsys, kind):
    ckpt = tmp_path / "model.pt"
    if kind == "random":
        ckpt.write_bytes(os.urandom(2048))
    else:
        ckpt.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    for argv in commands(ckpt, tmp_path, shards):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ".pt: not a fastasr checkpoint" in err, (argv, err)


def test_average_out_must_name_a_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    for out in (str(tmp_path / "newdir") + os.sep, str(taken)):
        assert main(["average", str(tmp_path), "--last", "1", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a directory; give a file name such as" in err, err
    assert not (tmp_path / "newdir").exists() and list(taken.iterdir()) == []
