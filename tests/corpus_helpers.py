"""Tiny corpora written in tmp_path for the shard/stats/corpus tests (no download, no synthetic-corpus tool)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from fastasr.shards.writer import ShardOptions, build_shards

FORMATS = {"opus": ("OGG", "OPUS"), "wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


def audio_bytes(seconds: float = 1.5, sr: int = 16000, channels: int = 1, ext: str = "opus", seed: int = 0) -> bytes:
    """A speech-like signal: a few harmonics with a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    x = np.repeat(x[:, None], channels, axis=1).astype(np.float32)
    fmt, subtype = FORMATS[ext]
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def write_utt(root: Path, rel: str, text: str | bytes | None, *, seconds: float = 1.5, sr: int = 16000,
              channels: int = 1, audio: bytes | None = None, seed: int = 0) -> Path:
    """Write ROOT/REL (audio; its extension picks the format) and the .txt beside it (unless text is None)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix[1:].lower()
    path.write_bytes(audio_bytes(seconds, sr, channels, ext, seed) if audio is None else audio)
    if text is not None:
        txt = path.with_suffix(".txt")
        txt.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


WORDS = "мама мыла раму утром солнце светит ярко над полем тихо шумит лес".split()


def make_corpus(root: Path, n: int, *, seconds: float = 1.5, start: int = 0) -> list[str]:
    """n good utterances in an Open STT-like nested layout; returns their sources."""
    sources = []
    for i in range(start, start + n):
        rel = f"set_a/{i % 3}/{i:02x}/utt{i:04d}.opus"
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 3))
        write_utt(root, rel, words.capitalize() + ".", seconds=seconds, seed=i)
        sources.append(rel)
    return sources


def build(src, out, **kw):
    opts = {k: kw.pop(k) for k in ("shard_size", "seed", "split_fractions", "filters", "group_by") if k in kw}
    return build_shards(src, out, ShardOptions(**opts), progress=False, workers=kw.pop("workers", 1), **kw)


def read_dataset(out: Path) -> dict[str, dict[str, bytes]]:
    """{split/shard: {member name: bytes}} through plain tarfile."""
    index = json.loads((out / "index.json").read_text())
    data = {}
    for split, v in index["splits"].items():
        for shard in v["shards"]:
            with tarfile.open(out / shard["path"]) as tar:
                data[shard["path"]] = {m.name: tar.extractfile(m).read() for m in tar}
    return data


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/shard-*.tar"))}
