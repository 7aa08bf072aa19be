"""Shared helpers for the model / training / eval tests: tiny models and tiny shard directories in tmp_path."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch

from fastasr.data.sample import Batch
from fastasr.model.transducer import Transducer
from fastasr.training.config import preset


def tiny_model(**over) -> Transducer:
    c = replace(preset("tiny").model, vocab_size=34, d_model=32, n_heads=2, n_layers=2, pred_embed=16,
                pred_hidden=32, joint_dim=24, subsampling_channels=8, dropout=0.0, **over)
    torch.manual_seed(0)
    return Transducer(c).eval()


WORDS = "мама мыла раму утром солнце светит ярко над полем тихо шумит лес".split()


def _opus(seconds: float, seed: int, sr: int = 16000, channels: int = 1, fmt=("OGG", "OPUS")) -> bytes:
    """A tone sweep plus noise: not speech, but real audio through the real decoder."""
    import io

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 100 * rng.random()) * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)
    x = np.repeat(x[:, None], channels, axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt[0], subtype=fmt[1])
    return buf.getvalue()


def make_shards(out, shard_sizes=None, *, seconds=(0.4, 1.0)) -> dict:
    """A shard directory in DESIGN.md's format, packed with tarfile: by default train shards of 7, 5 and 4 samples (they
    do not divide evenly over 2 ranks or batches), one val shard of 4, one test shard of 5."""
    import io
    import json
    import tarfile
    from pathlib import Path

    from fastasr.text.normalization import DEFAULT_TEXT

    out = Path(out)
    shard_sizes = shard_sizes or {"train": [7, 5, 4], "val": [4], "test": [5]}
    index = {"format": "fastasr-shards/1", "text": DEFAULT_TEXT.to_dict(), "seed": 17,
             "split_fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "splits": {}}
    i = 0
    for split, sizes in shard_sizes.items():
        shards = []
        for s, n in enumerate(sizes):
            rel = f"{split}/shard-{s:06d}.tar"
            (out / split).mkdir(parents=True, exist_ok=True)
            total = 0.0
            with tarfile.open(out / rel, "w") as tar:
                for _ in range(n):
                    dur = seconds[0] + (seconds[1] - seconds[0]) * ((i * 7919) % 100) / 100
                    key = f"synth/{i % 3}/utt{i:04d}"
                    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 2))
                    meta = {"duration": dur, "sample_rate": 16000, "channels": 1, "source": key + ".opus",
                            "raw_text": text}
                    for ext, data in (("opus", _opus(dur, i)), ("txt", text.encode()),
                                      ("json", json.dumps(meta).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                    total += dur
                    i += 1
            shards.append({"path": rel, "samples": n, "seconds": total})
        index["splits"][split] = {"samples": sum(sizes), "seconds": sum(x["seconds"] for x in shards),
                                  "shards": shards}
    index["totals"] = {"input_rows": i, "samples": i, "seconds": sum(v["seconds"] for v in index["splits"].values()),
                       "rejected": 0}
    index["rejected"] = {}
    (out / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1))
    (out / "rejected.tsv").write_text("source\treason\tdetail\n")
    return index


def make_config(**train):
    """The tiny preset shrunk so a step takes milliseconds; deterministic (no workers, no dropout)."""
    over = {"model": dict(d_model=32, n_heads=2, n_layers=2, pred_embed=16, pred_hidden=32, joint_dim=24,
                          subsampling_channels=8, dropout=0.0),
            "optim": dict(warmup_steps=2, lr=3e-3),
            "data": dict(max_batch_seconds=2.5, num_workers=0, val_utterances=4, val_batch_seconds=10.0),
            "train": dict(dict(log_every=1, val_every=1000, ckpt_every=1000, progress=False, device="cpu"), **train)}
    return preset("tiny", over)


class Crash(Exception):
    """Raised by crash_at's batch hook: a run killed at a given step (the checkpoint before it is what remains)."""


def crash_at(step_to_crash):
    """train()'s batch_hook that raises Crash at the start of step `step_to_crash`."""
    def hook(step, batch):
        if step == step_to_crash:
            raise Crash(step)
        return batch

    return hook


class NoAugment(torch.nn.Module):
    def forward(self, feats, feat_lens, fill=None):
        return feats


def batch(audio_lens: list[int], token_lens: list[int], seed: int, vocab: int = 34) -> Batch:
    g = torch.Generator().manual_seed(seed)
    audio = torch.zeros(len(audio_lens), max(audio_lens), dtype=torch.float64)
    tokens = torch.zeros(len(token_lens), max(token_lens), dtype=torch.int64)
    for i, (n, u) in enumerate(zip(audio_lens, token_lens)):
        audio[i, :n] = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        tokens[i, :u] = torch.randint(1, vocab, (u,), generator=g)
    return Batch(audio, torch.tensor(audio_lens), tokens, torch.tensor(token_lens),
                 keys=[f"k{i}" for i in range(len(audio_lens))], texts=[""] * len(audio_lens), epoch=0, index=0)


READ_BACKS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "cpu", "numpy")
STEP_CODE = tuple(os.path.join("fastasr", *f.split("/")) for f in (
    "training/loop.py", "training/setup.py", "training/step.py", "model/features.py", "model/transducer.py"))


def count_read_backs(patch, reads: list, at: dict) -> None:
    """Patch (with `patch(obj, name, value)`, a monkeypatch's setattr) every read-back a tensor offers so that a call
    from the training code appends (at["step"], name, calling function) to `reads`."""
    def counted(name):
        original = getattr(torch.Tensor, name)

        def read_back(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.endswith(STEP_CODE):
                reads.append((at["step"], name, caller.co_name))
            return original(self, *args, **kwargs)

        return read_back

    for name in READ_BACKS:
        patch(torch.Tensor, name, counted(name))
