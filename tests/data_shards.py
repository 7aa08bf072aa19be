"""Tiny shard directories for the loader tests, written with soundfile + tarfile (independent of fastasr.shards.writer)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fastasr.text.normalization import TextConfig

WORDS = "мама мыла раму утром солнце светит ярко над полем тихо шумит лес".split()
# (extension, sample rate, channels): 48 kHz stereo Opus, 8 kHz WAV, …
FORMATS = [("opus", 48000, 2), ("wav", 8000, 1), ("opus", 16000, 1), ("flac", 22050, 2), ("wav", 48000, 2)]
SF_FORMAT = {"opus": ("OGG", "OPUS"), "wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


@dataclass
class Utt:
    key: str
    ext: str
    audio: bytes
    text: str
    duration: float
    sample_rate: int
    channels: int


def speech_like(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """Harmonics with a syllable-rate envelope plus a little noise, (n, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(2, int(round(seconds * sr)))) / sr
    f0 = 100 + 80 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random()) / k for k in range(1, 6))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * (3 + 2 * rng.random()) * t)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    cols = [x * (1.0 - 0.3 * c) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def encode(x: np.ndarray, sr: int, ext: str) -> bytes:
    fmt, subtype = SF_FORMAT[ext]
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def make_utts(n: int, *, seed: int = 0, min_s: float = 0.3, max_s: float = 1.6, formats=FORMATS) -> list[Utt]:
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        ext, sr, ch = formats[i % len(formats)]
        seconds = float(rng.uniform(min_s, max_s))
        audio = encode(speech_like(seconds, sr, ch, seed * 100003 + i), sr, ext)
        info = sf.info(io.BytesIO(audio))
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 4))
        utts.append(Utt(f"set_{i % 3}/{i // 10:02d}/utt{i:05d}", ext, audio, text, info.duration, sr, ch))
    return utts


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(out: Path, utts: list[Utt], shard_sizes: list[int], split: str = "train",
                 json_override: dict[str, bytes] | None = None, durations: bool = True) -> dict:
    """Pack utts into consecutive shards of the given sizes and write index.json (and, with `durations`, the
    split's durations table, as `fastasr shard` does); returns the index."""
    assert sum(shard_sizes) == len(utts), (sum(shard_sizes), len(utts))
    json_override = json_override or {}
    shards, pos = [], 0
    (out / split).mkdir(parents=True, exist_ok=True)
    for s, size in enumerate(shard_sizes):
        path = f"{split}/shard-{s:06d}.tar"
        chunk = utts[pos : pos + size]
        pos += size
        with tarfile.open(out / path, "w", format=tarfile.PAX_FORMAT) as tar:
            for u in chunk:
                meta = {"duration": round(u.duration, 6), "sample_rate": u.sample_rate, "channels": u.channels,
                        "source": f"{u.key}.{u.ext}", "raw_text": u.text}
                add_member(tar, f"{u.key}.{u.ext}", u.audio)
                add_member(tar, f"{u.key}.txt", u.text.encode())
                add_member(tar, f"{u.key}.json", json_override.get(u.key, json.dumps(meta).encode()))
        shards.append({"path": path, "samples": len(chunk), "seconds": sum(u.duration for u in chunk),
                       "durations": [round(u.duration, 6) for u in chunk]})
    table = {s["path"]: s.pop("durations") for s in shards}
    index = {
        "format": "fastasr-shards/1",
        "text": TextConfig().to_dict(),
        "seed": 17,
        "split_fractions": {split: 1.0},
        "splits": {split: {"samples": len(utts), "seconds": sum(u.duration for u in utts), "shards": shards}},
        "totals": {"input_rows": len(utts), "samples": len(utts), "seconds": sum(u.duration for u in utts),
                   "rejected": 0},
        "rejected": {},
    }
    if durations:
        name = f"durations-{split}.json"
        index["splits"][split]["durations"] = name
        (out / name).write_text(json.dumps({"format": "fastasr-durations/1", "split": split, "shards": table}))
    (out / "index.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    return index
