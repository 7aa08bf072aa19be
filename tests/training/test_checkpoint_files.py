"""What a run writes loads with torch's own weights-only load; the RNG state survives it exactly; an older
checkpoint (NumPy RNG state as an ndarray) is refused in one line and `fastasr convert-checkpoint` makes it one a
resumed run continues from exactly as from the original."""

import random
import shutil

import numpy as np
import pytest
import torch
from asr_helpers import make_config, make_shards
from checkpoint_helpers import old_format

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.loop import train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(shards, run, make_config(max_steps=4, ckpt_every=2, keep=2, ema_decay=0.9))
    return run


def draws():
    return random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()


def test_everything_a_run_writes_loads_as_data_only(run, tmp_path):
    assert main(["average", str(run), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    files = [run / "last.pt", run / "ema.pt", *ckpt_io.step_checkpoints(run), tmp_path / "avg.pt"]
    assert len(files) == 5
    for path in files:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # torch's own, not fastasr's reader
        assert ckpt["step"] == 4 or path.name == "step-0000002.pt"
    last = torch.load(run / "last.pt", weights_only=True)
    assert {"optimizer", "rng", "data", "stream", "ema", "tokenizer"} <= set(last)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    random.gauss(0, 1), np.random.standard_normal()  # a cached Gaussian in both states
    ckpt_io.save_atomic({"rng": [ckpt_io.rng_state()]}, tmp_path / "rng.pt")
    want = draws()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt_io.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"][0])
    assert draws() == want


def test_an_old_checkpoint_is_refused_in_one_line_and_converts_once(run, tmp_path, capsys):
    np.random.seed(11)
    np.random.standard_normal()
    old = old_format(torch.load(run / "last.pt", weights_only=True), tmp_path / "old.pt")
    want = np.random.standard_normal(4).tolist()  # what the old state continues with
    before = old.read_bytes()
    with pytest.raises(UserError, match=f"convert it once: fastasr convert-checkpoint {old} NEW.pt"):
        ckpt_io.load(old)

    assert main(["convert-checkpoint", str(old), str(tmp_path / "new.pt")]) == 0
    assert "new.pt" in capsys.readouterr().out
    new = ckpt_io.load(tmp_path / "new.pt")
    assert old.read_bytes() == before
    np.random.seed(0)
    ckpt_io.set_rng_state(new["rng"][0])
    assert np.random.standard_normal(4).tolist() == want

    for target, message in ((tmp_path / "new.pt", "new.pt: exists"), (tmp_path / "dir", "dir: is a directory"),
                            (str(tmp_path / "fresh") + "/", "fresh/: is a directory")):
        (tmp_path / "dir").mkdir(exist_ok=True)
        assert main(["convert-checkpoint", str(old), str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "fresh").exists()


def test_help_says_convert_is_only_for_trusted_files(capsys):
    assert main(["convert-checkpoint", "--help"]) == 0
    assert "ONLY FOR FILES YOU TRUST" in " ".join(capsys.readouterr().out.split())


def test_a_converted_checkpoint_resumes_exactly_like_the_original(shards, tmp_path, capsys):
    from asr_helpers import Crash, crash_at

    with pytest.raises(Crash):
        train(shards, tmp_path / "a", make_config(max_steps=5, ckpt_every=3), batch_hook=crash_at(4))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    # The same state in the old format: the NumPy state as np.random.get_state() returned it.
    name, keys, pos, has_gauss, cached = saved["rng"][0]["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.save({**saved, "rng": [{**saved["rng"][0], "numpy": np.random.get_state()}]}, tmp_path / "b" / "last.pt")

    capsys.readouterr()
    assert main(["train", "--run-dir", str(tmp_path / "b"), "--resume", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt: holds Python objects" in err and "convert-checkpoint" in err, err
    assert main(["convert-checkpoint", str(tmp_path / "b" / "last.pt"), str(tmp_path / "b" / "converted.pt")]) == 0
    (tmp_path / "b" / "converted.pt").replace(tmp_path / "b" / "last.pt")

    for name in ("a", "b"):
        train(shards, tmp_path / name, make_config(max_steps=5), resume=True)
    a, b = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("a", "b"))
    assert a["step"] == b["step"] == 5 and a["data"] == b["data"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=0, rtol=0, msg=k)
