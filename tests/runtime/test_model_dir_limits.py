"""An export directory is data: model.json's numbers out of range and file names that lead out of the directory
are refused in one line before anything is allocated, opened or looped over (fastasr.runtime.model_dir)."""

import json
import re
import shutil

import pytest
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.export import export
from fastasr.runtime import OnnxTransducer
from fastasr.runtime.model_dir import read_model_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    export(save_checkpoint(talkative_model(), d / "model.pt"), d / "exp")
    return d / "exp"


def edited(out, tmp_path, name, edit):
    d = tmp_path / name
    shutil.copytree(out, d)
    meta = json.loads((d / "model.json").read_text())
    edit(meta)
    (d / "model.json").write_text(json.dumps(meta))  # json writes NaN and Infinity as such
    return d


def setting(dotted, value):
    def edit(meta):
        *path, last = dotted.split(".")
        for key in path:
            meta = meta[key]
        meta[last] = value
    return edit


CASES = [
    ("features.n_fft", 10 ** 9, "'features.n_fft' is 1000000000, expected an integer in 2..4096"),
    ("features.hop_length", 1, "'features.hop_length' is 1, expected an integer in 32..4096"),
    ("features.n_mels", 10 ** 6, "'features.n_mels' is 1000000, expected an integer in 1..512"),
    ("features.sample_rate", 0, "'features.sample_rate' is 0, expected an integer in 1000..192000"),
    ("features.f_max", float("inf"), "'features.f_max' is inf, expected a finite number"),
    ("features.f_max", 9000.0, "need 0 <= f_min < f_max <= sample_rate / 2"),
    ("features.log_floor", float("nan"), "'features.log_floor' is nan, expected a finite number"),
    ("decoding.max_symbols_per_frame", 10 ** 12, "'decoding.max_symbols_per_frame' is 1000000000000"),
    ("decoding.vocab_size", 1 << 40, "'decoding.vocab_size' is 1099511627776"),
    ("predictor.layers", 10 ** 6, "'predictor.layers' is 1000000, expected an integer in 1..64"),
    ("predictor.hidden", 2.5, "'predictor.hidden' is 2.5, expected an integer in 1..8192"),
    ("audio.preemphasis", 5.0, "audio.preemphasis is 5.0, expected 0 <= coefficient < 1"),
    ("graphs.float.encoder", "../encoder.onnx", "graphs.float.encoder is '../encoder.onnx'; expected a file name"),
    ("graphs.float.joiner", "/etc/hostname", "graphs.float.joiner is '/etc/hostname'; expected a file name"),
    ("graphs.float.joiner", "sub/joiner.onnx", "graphs.float.joiner is 'sub/joiner.onnx'; expected a file name"),
    ("tokenizer", "../tokenizer.json", "tokenizer is '../tokenizer.json'; expected a file name"),
]


def test_out_of_range_settings_and_outside_paths_are_one_line(exported, tmp_path, capsys):
    audio = write_audio(tmp_path / "a.wav", 0.5, 3)
    (tmp_path / "encoder.onnx").write_bytes((exported / "encoder.onnx").read_bytes())  # what ../ would reach
    for i, (dotted, value, message) in enumerate(CASES):
        d = edited(exported, tmp_path, f"case{i}", setting(dotted, value))
        with pytest.raises(UserError, match="^" + re.escape(str(d / "model.json")) + ".*" + re.escape(message)):
            read_model_dir(d)
        assert main(["transcribe", "--model", str(d), str(audio)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (dotted, err)


def test_a_graph_that_links_out_of_the_directory_is_refused(exported, tmp_path):
    d = tmp_path / "linked"
    shutil.copytree(exported, d)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(d / "joiner.onnx", outside)
    (d / "joiner.onnx").unlink()
    (d / "joiner.onnx").symlink_to(outside)
    with pytest.raises(UserError, match="graphs.float.joiner 'joiner.onnx' is a link out of the export directory"):
        OnnxTransducer(d)
    assert OnnxTransducer(exported).dir.max_symbols == 10  # the untouched export still loads
