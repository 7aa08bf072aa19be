"""Transcribe audio files: soundfile decode → mono → soxr to 16 kHz → the loader's Numba normalise + pre-emphasis
→ log-mel on the device → encoder → greedy or beam decoding. Any rate, any channel count, opus / wav / flac.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr
import torch

from fastasr.checkpoint import load_model
from fastasr.decode import decode
from fastasr.evaluate import pick_device
from fastasr.model import log_mel

SAMPLE_RATE = 16000


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """Mono float32 at 16 kHz, peak-normalised and pre-emphasised exactly as the training loader does it."""
    from fastasr.kernels import normalize_preemphasize

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return normalize_preemphasize(np.ascontiguousarray(mono, dtype=np.float32))


@torch.no_grad()
def transcribe(checkpoint: str | os.PathLike, paths: list[str], *, beam: int = 1, device: str = "auto",
               batch_size: int = 16) -> list[tuple[str, str]]:
    """(path, text) for each file, in the order given."""
    dev = pick_device(device)
    model, tokenizer, config = load_model(checkpoint, dev)
    frontend = log_mel(config.model).to(dev)
    out: list[tuple[str, str]] = []
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        signals = [read_audio(p) for p in chunk]
        lens = torch.tensor([len(s) for s in signals], dtype=torch.long)
        audio = torch.zeros(len(signals), int(lens.max()), dtype=torch.float32)  # (B, S)
        for b, s in enumerate(signals):
            audio[b, :len(s)] = torch.from_numpy(s)
        feats, feat_lens = frontend(audio.to(dev), lens.to(dev))
        enc, enc_lens = model.encode(feats, feat_lens)
        for path, ids in zip(chunk, decode(model, enc, enc_lens, beam=beam)):
            out.append((str(path), tokenizer.decode(ids)))
    return out
