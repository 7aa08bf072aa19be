"""Settings from the command line: --print-config lists every setting of every section, a --config file (JSON or
YAML) sits between the preset and the overrides, and its mistakes are one line and exit 2."""

import json
from dataclasses import fields

import pytest

from fastasr.cli import main
from fastasr.training.config import SECTIONS, Config, apply_overrides, preset


def printed(capsys, *argv) -> dict[str, str]:
    assert main(["train", "--print-config", *argv]) == 0
    out = capsys.readouterr().out
    settings = {}
    for line in out.splitlines():
        if line.startswith("# "):  # a section's heading
            continue
        key, _, value = line.partition("  #")[0].partition("=")
        settings[key] = value
    return settings


def test_print_config_lists_every_setting_of_every_section(capsys):
    settings = printed(capsys, "--preset", "small", "optim.lr=7e-4")
    expected = {f"{s}.{f.name}" for s in SECTIONS for f in fields(getattr(Config(), s))}
    assert set(settings) == expected
    # The resolved values: override over preset over default, and each line is an override that reproduces it.
    assert settings["optim.lr"] == "0.0007" and settings["model.d_model"] == "256"
    assert settings["optim.grad_clip"] == "5.0"
    again = apply_overrides(Config(), [f"{k}={v}" for k, v in settings.items()])
    assert again == preset("small", ["optim.lr=7e-4"])
    # "the preset's" is the value the preset gives, not a dataclass default no preset uses
    assert main(["train", "--print-config", "--preset", "small", "optim.lr=7e-4"]) == 0
    out = capsys.readouterr().out.splitlines()
    lr = next(line for line in out if line.startswith("optim.lr="))
    assert lr.startswith("optim.lr=0.0007  # peak learning rate") and lr.endswith("; preset small: 0.0015")
    assert any(line.startswith("model.d_model=256  # encoder width") for line in out)
    assert [line for line in out if line.startswith("# ")] == [f"# {s}" for s in SECTIONS]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_sits_between_preset_and_overrides(capsys, tmp_path, suffix):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
        text = "optim:\n  lr: 1e-3\n  warmup_steps: 7\nmodel:\n  dropout: 0\ntrain:\n  amp: false\n"
    else:
        text = json.dumps({"optim": {"lr": 1e-3, "warmup_steps": 7}, "model": {"dropout": 0},
                           "train": {"amp": False}})
    (tmp_path / f"c{suffix}").write_text(text)
    settings = printed(capsys, "--config", str(tmp_path / f"c{suffix}"), "optim.warmup_steps=9")
    assert settings["optim.lr"] == "0.001" and settings["model.dropout"] == "0.0"
    assert settings["train.amp"] == "false"
    assert settings["optim.warmup_steps"] == "9"  # the command line wins
    assert settings["model.d_model"] == "96"  # the preset (tiny) below the file


@pytest.mark.parametrize("text, names", [
    ('{"optim": {"lr": "fast"}}', "optim.lr"),
    ('{"optim": {"warmup_steps": 1.5}}', "optim.warmup_steps"),
    ('{"optm": {"lr": 1}}', "optm"),
    ('{"optim": {"lr": -1}}', "optim.lr"),
    ('[1, 2]', "sections"),
    ('{"optim": ', "JSON"),
])
def test_config_file_mistakes_are_one_line(capsys, tmp_path, text, names):
    (tmp_path / "c.json").write_text(text)
    assert main(["train", "--print-config", "--config", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastasr train: error: ") and names in err and err.count("\n") == 1, err


def test_missing_config_file_is_one_line(capsys, tmp_path):
    assert main(["train", "--print-config", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "--config" in capsys.readouterr().err


SIZES = ("n_mels", "subsampling_channels", "d_model", "n_layers", "n_heads", "ff_mult", "conv_kernel", "pred_embed",
         "pred_hidden", "pred_layers", "joint_dim")


def test_model_sizes_no_machine_could_hold_are_one_line_naming_the_range(capsys):
    from fastasr.errors import UserError
    from fastasr.model.config import MAX_SIZES

    assert main(["train", "--print-config", "model.d_model=100000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.d_model=100000000: wants 1..8192" in err, err
    for name in SIZES:
        top = MAX_SIZES[name]
        with pytest.raises(UserError, match=f"^model.{name}={top + 1}: wants .*1..{top}"):
            preset("tiny", [f"model.{name}={top + 1}"])
        with pytest.raises(UserError, match=f"^model.{name}=0: wants .*1..{top}"):
            preset("tiny", [f"model.{name}=0"])
    # The bounds themselves are settings (checked, not built): conv_kernel's odd, d_model divisible by n_heads.
    at_top = preset("tiny", [*(f"model.{n}={MAX_SIZES[n]}" for n in SIZES if n not in ("n_heads",)),
                             "model.n_heads=256"])
    assert at_top.model.d_model == 8192 and at_top.model.conv_kernel == 1023


def test_streaming_needs_a_conformer_and_delay_penalty_is_checked():
    from fastasr.errors import UserError

    with pytest.raises(UserError, match="model.streaming=true needs model.encoder=conformer"):
        preset("tiny", ["model.streaming=true", "model.encoder=lstm"])
    with pytest.raises(UserError, match="train.delay_penalty=-1.0: wants >= 0"):
        preset("tiny", ["train.delay_penalty=-1"])
    assert preset("tiny", ["train.delay_penalty=0.005"]).train.delay_penalty == 0.005


def test_streaming_needs_the_kaldi_front_end():
    from fastasr.errors import UserError

    with pytest.raises(UserError, match="model.streaming=true needs model.frontend=kaldi"):
        preset("tiny", ["model.streaming=true", "model.frontend=logmel"])


def test_every_setting_has_a_line_of_help():
    from fastasr.training.settings_help import HELP

    names = {f"{s}.{f.name}" for s in SECTIONS for f in fields(getattr(Config(), s))}
    assert set(HELP) == names and all(HELP.values())
