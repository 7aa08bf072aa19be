"""fastasr.runtime without torch, and the one-line errors for a missing or broken export directory."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.export import export
from fastasr.inference.transcribe import transcribe
from fastasr.runtime import OnnxTransducer

ROOT = Path(__file__).resolve().parents[2]
# torch and onnx (the exporter's package) cannot be imported in this process: the runtime needs neither.
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("runtime")
    ckpt = save_checkpoint(talkative_model(), d / "model.pt")
    export(ckpt, d / "exp")
    return ckpt, d / "exp"


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_runtime_runs_where_torch_cannot_be_imported(exported, tmp_path):
    ckpt, out = exported
    files = [write_audio(tmp_path / "a.wav", 1.1, 1, sr=48000, channels=2, subtype="PCM_16"),
             write_audio(tmp_path / "b.flac", 2.0, 2, sr=16000, subtype="PCM_16")]
    assert run_python("import fastasr.runtime").returncode == 0
    blocked = run_python("import torch")
    assert blocked.returncode != 0 and "import of torch halted" in blocked.stderr  # the block is real
    proc = run_python("from fastasr.cli import main; "
                      f"raise SystemExit(main(['transcribe', '--model', {str(out)!r}, *{[str(f) for f in files]!r}]))")
    assert proc.returncode == 0, proc.stderr
    want = transcribe(ckpt, files, device="cpu")
    assert proc.stdout == "".join(f"{p}\t{t}\n" for p, t in want)


def broken_copies(out: Path, tmp_path: Path):
    """(export directory, what the one error line must say) for each kind of damage."""
    def copy(name):
        d = tmp_path / name
        shutil.copytree(out, d)
        return d

    cases = [(tmp_path / "nowhere", "nowhere: no such export directory")]
    d = copy("no_meta")
    (d / "model.json").unlink()
    cases.append((d, "model.json: missing"))
    d = copy("bad_json")
    (d / "model.json").write_text("{not json")
    cases.append((d, "model.json: not valid JSON"))
    d = copy("other_format")
    meta = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**meta, "format": "fastasr-onnx/0"}))
    cases.append((d, "format 'fastasr-onnx/0', expected 'fastasr-onnx/2'"))
    d = copy("older_fastasr")  # the graphs' inputs and outputs before sherpa-onnx's convention
    (d / "model.json").write_text(json.dumps({**meta, "format": "fastasr-onnx/1"}))
    cases.append((d, "an export of an older fastasr (format 'fastasr-onnx/1', other graph inputs and outputs; this "
                     "one reads 'fastasr-onnx/2'): re-export with this fastasr"))
    d = copy("unknown_features")
    (d / "model.json").write_text(json.dumps({**meta, "features": {**meta["features"], "type": "mfcc"}}))
    cases.append((d, "features.type is 'mfcc'; this runtime computes ['log_mel', 'kaldi_fbank']"))
    d = copy("no_rate")
    del meta["features"]["hop_length"]
    (d / "model.json").write_text(json.dumps(meta))
    cases.append((d, "field 'features.hop_length' is missing"))
    d = copy("truncated")
    data = (d / "encoder.onnx").read_bytes()
    (d / "encoder.onnx").write_bytes(data[: len(data) // 2])
    cases.append((d, "encoder.onnx: not a loadable ONNX graph"))
    d = copy("no_joiner")
    (d / "joiner.onnx").unlink()
    cases.append((d, "joiner.onnx: missing from the export directory"))
    d = copy("swapped")
    shutil.copy(d / "joiner.onnx", d / "encoder.onnx")
    cases.append((d, "encoder.onnx: the encoder graph's inputs and outputs are"))
    d = copy("no_tokens")
    (d / "tokenizer.json").unlink()
    cases.append((d, "tokenizer.json: missing"))
    d = copy("wordpiece")
    (d / "tokenizer.json").write_text(json.dumps({"format": "fastasr-tokenizer/1", "type": "wordpiece"}))
    cases.append((d, "tokenizer type 'wordpiece' is not supported by this runtime"))
    return cases


def test_missing_or_broken_export_is_one_clear_line(exported, tmp_path, capsys):
    _, out = exported
    audio = write_audio(tmp_path / "a.wav", 0.5, 3)
    for model_dir, message in broken_copies(out, tmp_path):
        with pytest.raises(UserError, match="^" + re.escape(str(model_dir))):
            OnnxTransducer(model_dir)
        assert main(["transcribe", "--model", str(model_dir), str(audio)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith("fastasr transcribe: error: ") and message in captured.err, captured.err
    assert main(["transcribe", "--model", str(out), "--int8", str(audio)]) == 2  # exported without --quantize
    assert "has no int8 graphs (export with --quantize int8)" in capsys.readouterr().err


def test_same_file_errors_and_options_as_with_a_checkpoint(exported, tmp_path, capsys):
    ckpt, out = exported
    good = write_audio(tmp_path / "good.wav", 0.8, 4)
    garbage = tmp_path / "garbage.opus"
    garbage.write_bytes(b"\x00not audio" * 40)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    args = [str(good), str(garbage), str(tmp_path / "missing.wav"), str(empty)]
    assert main(["transcribe", "--model", str(out), *args]) == 1
    from_model = capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(ckpt), *args]) == 1
    assert capsys.readouterr() == from_model
    assert "3 of 4 files could not be read" in from_model.err
    for bad in ([*args[:1], "--beam", "4"], ["--checkpoint", str(ckpt), "--int8", str(good)]):
        argv = ["transcribe", *bad] if bad[0] == "--checkpoint" else ["transcribe", "--model", str(out), *bad]
        assert main(argv) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert main(["transcribe", "--checkpoint", str(tmp_path / "no.pt"), str(good)]) == 2
    assert "no.pt: no such checkpoint" in capsys.readouterr().err
