"""A tiny checkpoint whose transcripts depend on the audio, and audio made in tmp_path, for the export tests.

A freshly initialised model says the same thing whatever it hears (its encoder output barely moves over time
next to its mean, so one label wins every frame): comparing two such models' texts would prove little. Here the
joiner's encoder projection is recentred on the frames of a calibration signal and scaled up, so the label (and
blank) change from frame to frame and from file to file, with wide margins between the best logits. Training a
model instead would cost minutes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import soundfile as sf
import torch
from asr_helpers import tiny_model

from fastasr.audio.files import condition
from fastasr.model.transducer import Transducer, log_mel, waveform_of
from fastasr.text.normalization import DEFAULT_TEXT
from fastasr.training.checkpoints import save_atomic
from fastasr.training.config import preset


def patchwork(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """Float32 mono: 50–300 ms patches of tones, noise and silence."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * sr))
    pos = 0
    while pos < x.size:
        n = min(int(rng.uniform(0.05, 0.3) * sr), x.size - pos)
        kind, t = rng.integers(3), np.arange(n) / sr
        if kind == 0:
            x[pos:pos + n] = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
        elif kind == 1:
            x[pos:pos + n] = rng.uniform(0.05, 0.5) * rng.standard_normal(n)
        pos += n
    return x.astype(np.float32)


def write_audio(path, seconds: float, seed: int, sr: int = 16000, channels: int = 1, **sf_args):
    """A patchwork file; extra channels are the first one scaled, so the downmix is not trivial."""
    x = patchwork(seconds, seed, sr)
    sf.write(str(path), np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1), sr, **sf_args)
    return path


def talkative_model(encoder: str = "conformer", blank_bias: float = 1.0, scale: float = 10.0, vocab_size: int = 34,
                    frontend: str = "logmel", **settings):
    """In eval mode, with dropout in its config (as a trained checkpoint has): only eval mode may be exported.
    Calibrated on the features of its `frontend` (model.frontend: "logmel" or "kaldi"); `settings`: other
    ModelConfig fields (streaming=True, chunk_frames=…, left_chunks=…)."""
    torch.manual_seed(0)
    model = Transducer(replace(tiny_model().config, encoder=encoder, dropout=0.1, vocab_size=vocab_size,
                               frontend=frontend, **settings)).eval()
    audio = condition(patchwork(3.0, seed=99), waveform_of(model.config))
    feats, lens = log_mel(model.config)(torch.from_numpy(audio)[None], torch.tensor([audio.size]))
    if model.config.streaming:  # global statistics that are not the identity, so exports must carry them
        with torch.no_grad():
            model.encoder.feat_mean.copy_(feats[0].mean(0))
            model.encoder.feat_std.copy_(feats[0].std(0) + 0.5)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)  # (1, T', J)
        mean = enc[0, :enc_lens[0]].mean(0)
        proj = model.joiner.enc_proj
        proj.weight *= scale
        proj.bias.copy_(scale * (proj.bias - mean))
        model.joiner.out.bias[0] += blank_bias
    return model


def save_checkpoint(model, path, step: int = 7, tokenizer=None):
    """An alphabet-only checkpoint (as before fastasr.text.tokenizer), or with `tokenizer` one carrying that."""
    config = replace(preset("tiny"), model=model.config)
    vocab = {"alphabet": DEFAULT_TEXT.alphabet} if tokenizer is None else {"tokenizer": tokenizer.to_dict()}
    save_atomic({"config": config.to_dict(), **vocab, "model": model.state_dict(), "step": step}, path)
    return path
