"""An export of a model.frontend=kaldi model in fastasr.runtime: kaldi fbank features on the raw waveform, and its
model.json settings checked like the log-mel ones (fastasr.runtime.model_dir)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.errors import UserError
from fastasr.inference.export import export
from fastasr.inference.transcribe import transcribe
from fastasr.runtime import OnnxTransducer
from fastasr.runtime import transcribe as runtime_transcribe
from fastasr.runtime.model_dir import read_model_dir


@pytest.fixture(scope="module")
def kaldi(tmp_path_factory):
    d = tmp_path_factory.mktemp("kaldi")
    ckpt = save_checkpoint(talkative_model(frontend="kaldi"), d / "model.pt")
    export(ckpt, d / "exp")
    return ckpt, d / "exp"


def test_kaldi_export_transcribes_like_the_checkpoint(kaldi, tmp_path):
    ckpt, out = kaldi
    d = read_model_dir(out)
    assert (d.feature_type, d.waveform, d.features.n_mels, d.blank) == ("kaldi_fbank", "raw", 80, d.vocab_size - 1)
    assert OnnxTransducer(out).waveform == "raw"
    audio = [write_audio(tmp_path / "a.wav", 1.2, 1, sr=48000, channels=2, subtype="PCM_16"),
             write_audio(tmp_path / "b.flac", 2.3, 2, subtype="PCM_16"),
             write_audio(tmp_path / "c.wav", 0.6, 3, sr=8000, subtype="FLOAT")]
    want = transcribe(ckpt, audio, device="cpu")
    assert runtime_transcribe(out, audio) == want
    assert all(t for _, t in want) and len({t for _, t in want}) == len(want)
    # The kaldi fbank is NumPy too: torch cannot be imported where the runtime runs.
    root = Path(__file__).resolve().parents[2]
    code = ("import sys; sys.modules['torch'] = None; from fastasr.runtime import transcribe; "
            f"print(transcribe({str(out)!r}, {[str(a) for a in audio]!r}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == repr(want), proc.stderr


CASES = [
    ("features.window", "blackman", "bad kaldi_fbank settings (window must be one of"),
    ("features.edges", "zeros", "features.edges is 'zeros'; this runtime computes 'symmetric_reflection'"),
    ("features.snip_edges", True, "features.snip_edges is True; this runtime computes False"),
    ("features.n_fft", 10 ** 9, "'features.n_fft' is 1000000000, expected an integer in 2..4096"),
    ("features.preemphasis", 2.0, "bad kaldi_fbank settings (preemphasis must be in [0, 1]"),
    ("features.normalize", "yes", "'features.normalize' is 'yes', expected bool"),
    ("audio.preemphasis", 0.97, "audio.preemphasis is 0.97; this runtime pre-emphasises only a peak-normalised"),
    ("decoding.tokenizer_id_offset", 0, "decoding.blank_id 33 and tokenizer_id_offset 0 do not map the blank"),
]


@pytest.mark.parametrize("dotted,value,message", CASES)
def test_bad_kaldi_settings_are_one_line(kaldi, tmp_path, dotted, value, message):
    _, out = kaldi
    d = tmp_path / "edited"
    shutil.copytree(out, d)
    meta = json.loads((d / "model.json").read_text())
    section, key = dotted.split(".")
    meta[section][key] = value
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="^" + re.escape(str(d / "model.json")) + ".*" + re.escape(message)):
        read_model_dir(d)
