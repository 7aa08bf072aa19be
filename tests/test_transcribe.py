"""`fastasr transcribe`: any rate / channel count / container, the loader's audio path, one line per file."""

import io
from dataclasses import replace

import numpy as np
import soundfile as sf
import soxr
import torch

from fastasr.checkpoint import save_atomic
from fastasr.cli import main
from fastasr.config import preset
from fastasr.text import DEFAULT_TEXT
from fastasr.transcribe import read_audio, transcribe

from asr_helpers import tiny_model


def write(path, seconds, sr, channels, fmt, subtype):
    t = np.arange(int(seconds * sr)) / sr
    x = np.stack([0.4 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(channels)], axis=1)
    sf.write(str(path), x.astype(np.float32), sr, format=fmt, subtype=subtype)
    return path


def checkpoint(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.joiner.out.bias[1:] += 1.0  # make it say something
    config = replace(preset("tiny"), model=model.config)
    path = tmp_path / "model.pt"
    save_atomic({"config": config.to_dict(), "alphabet": DEFAULT_TEXT.alphabet, "model": model.state_dict()}, path)
    return path


def test_read_audio_48k_stereo_matches_loader_path(tmp_path):
    from fastasr.kernels import normalize_preemphasize

    path = write(tmp_path / "a.wav", 1.0, 48000, 2, "WAV", "PCM_16")
    got = read_audio(path)
    raw, sr = sf.read(str(path), dtype="float32", always_2d=True)
    want = normalize_preemphasize(soxr.resample(raw.mean(axis=1), sr, 16000).astype(np.float32))
    assert got.dtype == np.float32 and got.ndim == 1 and abs(len(got) - 16000) <= 1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_transcribe_formats_rates_channels(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    files = [write(tmp_path / "stereo48k.wav", 0.8, 48000, 2, "WAV", "PCM_16"),
             write(tmp_path / "mono8k.flac", 0.5, 8000, 1, "FLAC", "PCM_16"),
             write(tmp_path / "stereo48k.opus", 1.2, 48000, 2, "OGG", "OPUS"),
             write(tmp_path / "six22k.wav", 0.6, 22050, 6, "WAV", "FLOAT")]
    results = transcribe(ckpt, [str(f) for f in files], device="cpu")
    assert [p for p, _ in results] == [str(f) for f in files]
    assert all(set(text) <= set(DEFAULT_TEXT.alphabet) for _, text in results)
    # Batched (all files together) and one at a time agree.
    assert results == [transcribe(ckpt, [str(f)], device="cpu")[0] for f in files]
    assert main(["transcribe", "--checkpoint", str(ckpt), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{p}\t{t}" for p, t in results]
    assert main(["transcribe", "--checkpoint", str(ckpt), "--beam", "3", str(files[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}\t")
