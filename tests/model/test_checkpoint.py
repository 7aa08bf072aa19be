"""Reading model files as data: torch's weights-only load, one line for anything else, and a file's claims checked
before a model is built (fastasr.model.checkpoint)."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from asr_helpers import tiny_model
from checkpoint_helpers import hostile_checkpoint
from export_helpers import save_checkpoint

from fastasr.errors import UserError
from fastasr.model.checkpoint import load, load_model
from fastasr.model.config import MAX_SIZES
from fastasr.model.transducer import Transducer, count_parameters, parameter_count
from fastasr.training.config import preset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("encoder", ["conformer", "lstm"])
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_parameter_count_is_the_built_model_s(name, encoder):
    for sub, pred_layers, n_mels in ((2, 1, 80), (4, 2, 81), (8, 3, 64)):
        c = replace(preset(name).model, vocab_size=37, encoder=encoder, subsampling=sub, pred_layers=pred_layers,
                    n_mels=n_mels)
        assert parameter_count(c) == count_parameters(Transducer(c)), (name, encoder, sub, pred_layers)


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "marker"
    path = hostile_checkpoint(tmp_path / "hostile.pt", marker)
    torch.load(path, weights_only=False)  # the payload is real: the full unpickler runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UserError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: holds Python objects") and "io.open" in message, message
    assert f"fastasr convert-checkpoint {path} NEW.pt" in message
    assert not marker.exists()


def test_anything_but_a_fastasr_checkpoint_is_one_error_naming_the_file(tmp_path):
    model = tiny_model()
    files = {"random.pt": os.urandom(4096), "empty.pt": b"", "text.pt": b"not a checkpoint at all"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(model.state_dict(), tmp_path / "bare_state_dict.pt")  # data only, but no config
    torch.save([1, 2, 3], tmp_path / "list.pt")
    good = save_checkpoint(model, tmp_path / "good.pt")
    blob = good.read_bytes()
    (tmp_path / "torn.pt").write_bytes(blob[: len(blob) // 2])
    for name in [*files, "bare_state_dict.pt", "list.pt", "torn.pt"]:
        with pytest.raises(UserError, match="^" + str(tmp_path / name) + ": not a fastasr checkpoint"):
            load(tmp_path / name)
    with pytest.raises(UserError, match="missing.pt: no such checkpoint"):
        load(tmp_path / "missing.pt")
    assert load(good)["step"] == 7


def _with_model_config(source, path, weights=None, **model):
    ckpt = torch.load(source, weights_only=True)
    ckpt["config"]["model"].update(model)
    if weights is not None:
        ckpt["model"] = weights
    torch.save(ckpt, path)
    return path


def test_a_checkpoint_s_model_settings_are_checked(tmp_path):
    good = save_checkpoint(tiny_model(), tmp_path / "good.pt")
    cases = [({"d_model": MAX_SIZES["d_model"] + 1}, "model setting d_model=8193 is outside 1..8192"),
             ({"n_layers": 0}, "model setting n_layers=0 is outside 1..256"),
             ({"d_model": "32"}, "model setting d_model='32' is not a int"),
             ({"n_layers": True}, "model setting n_layers=True is not a int"),
             ({"colour": "red"}, "unknown model setting 'colour'"),
             ({"encoder": "transformer"}, "fastasr builds conformer or lstm"),
             ({"d_model": 33}, "d_model=33 is not divisible by n_heads=2")]
    for i, (change, message) in enumerate(cases):
        path = _with_model_config(good, tmp_path / f"bad{i}.pt", **change)
        with pytest.raises(UserError, match="^" + str(path) + ": .*" + message.replace("(", r"\(")):
            load(path)
    renamed = {f"x.{k}": v for k, v in torch.load(good, weights_only=True)["model"].items()}
    with pytest.raises(UserError, match="its weights do not fit its model settings"):
        load_model(_with_model_config(good, tmp_path / "renamed.pt", weights=renamed))


# In a process whose address space is capped: the model a 300 KB file claims here would take 2.7 TB.
CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from fastasr.errors import UserError
from fastasr.model.checkpoint import load_model
from fastasr.model.config import ModelConfig
from fastasr.model.transducer import Transducer
import torch
if sys.argv[2] == "unchecked":
    Transducer(ModelConfig(**torch.load(sys.argv[1], weights_only=True)["config"]["model"]))
    raise SystemExit(0)
try:
    load_model(sys.argv[1])
except UserError as err:
    print(err)
    raise SystemExit(3)
"""


def test_a_small_file_cannot_make_a_reader_build_a_huge_model(tmp_path):
    good = save_checkpoint(tiny_model(), tmp_path / "good.pt")
    huge = _with_model_config(good, tmp_path / "huge.pt", d_model=8192, n_heads=8, n_layers=256, ff_mult=8)
    assert huge.stat().st_size < 1 << 20

    def run(mode):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([sys.executable, "-c", CAPPED, str(huge), mode], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)

    unchecked = run("unchecked")  # the cap is real: building what the settings say fails under it
    assert unchecked.returncode not in (0, 3) and ("memory" in unchecked.stderr.lower()), unchecked.stderr[-2000:]
    checked = run("checked")
    assert checked.returncode == 3, checked.stderr[-2000:]
    held = count_parameters(tiny_model())
    assert f"{huge}: holds {held:,} weights, but its model settings build" in checked.stdout, checked.stdout
