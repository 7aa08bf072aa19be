"""model.frontend=kaldi end to end in fastasr: training feeds the kaldi fbank the raw waveform, the checkpoint
says so, and every reader (eval, transcribe --checkpoint) conditions audio and computes features the same way.
Checked against an independent path: soundfile → soxr → fastasr.audio.fbank.kaldi_fbank (NumPy) → the model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from asr_helpers import make_config, make_shards

from fastasr.audio.fbank import FbankSettings, kaldi_fbank
from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.transcribe import checkpoint_recogniser
from fastasr.model.checkpoint import load_model
from fastasr.model.decode import decode
from fastasr.model.fbank import KaldiFbank
from fastasr.model.transducer import log_mel, waveform_of
from fastasr.training.config import preset
from fastasr.training.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = tmp_path_factory.mktemp("shards")
    make_shards(data)
    run = tmp_path_factory.mktemp("kaldi") / "run"
    config = make_config(max_steps=3)
    train(data, run, replace(config, model=replace(config.model, frontend="kaldi")))
    return data, run


def test_the_checkpoint_says_kaldi_and_its_readers_follow(run):
    _, run = run
    model, _, config = load_model(run / "last.pt")
    assert config.frontend == "kaldi" and waveform_of(config) == "raw"
    assert isinstance(log_mel(config), KaldiFbank)
    assert waveform_of(replace(config, frontend="logmel")) == "peak_preemphasis"


def test_transcribe_checkpoint_equals_the_numpy_front_end_on_raw_audio(run, tmp_path):
    _, run = run
    rng = np.random.default_rng(4)
    t = np.arange(int(1.3 * 44100)) / 44100
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size))
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([x, 0.5 * x], 1).astype(np.float32), 44100, subtype="FLOAT")  # stereo, 44.1 kHz
    recognise = checkpoint_recogniser(run / "last.pt", device="cpu")
    assert recognise.waveform == "raw"
    from fastasr.inference.transcribe import transcribe

    [(_, text)] = transcribe(run / "last.pt", [path], device="cpu")
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = soxr.resample(audio.mean(axis=1, dtype=np.float32), sr, 16000)  # as decoded: no peak norm, no pre-emph
    feats = torch.from_numpy(kaldi_fbank(mono, FbankSettings.sherpa_nemo(80)))[None]  # (1, T, 80)
    model, tokenizer, _ = load_model(run / "last.pt")
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, torch.tensor([feats.shape[1]]))
        [ids] = decode(model, enc, enc_lens, beam=1)
    assert text == tokenizer.decode(ids)


def test_eval_runs_on_a_kaldi_checkpoint(run, tmp_path):
    data, run = run
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--data", str(data), "--split", "test", "--device",
                 "cpu", "--workers", "0", "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval/metrics.json").is_file()


def test_an_unknown_front_end_is_one_line_naming_the_choices():
    with pytest.raises(UserError, match="model.frontend.*logmel or kaldi"):
        preset("tiny", ["model.frontend=mfcc"])


def test_a_checkpoint_from_before_the_setting_is_logmel(run, tmp_path):
    """kaldi is the default for new models; a checkpoint whose model settings have no `frontend` was trained on
    fastasr's log-mel, and every reader (load_model, --resume / --init-from's saved settings) says so."""
    from fastasr.model.checkpoint import load
    from fastasr.model.features import LogMel
    from fastasr.training.checkpoints import save_atomic

    assert preset("tiny").model.frontend == "kaldi"
    _, run = run
    ckpt = load(run / "last.pt")
    del ckpt["config"]["model"]["frontend"]
    old = tmp_path / "old.pt"
    save_atomic(ckpt, old)
    _, _, config = load_model(old)
    assert config.frontend == "logmel" and isinstance(log_mel(config), LogMel)
    assert load(old)["config"]["model"]["frontend"] == "logmel"
