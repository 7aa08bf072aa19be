"""Data for tools/gpu_check.py: tiny shards made in seconds for its CPU mode, and ``--prepare``, which packs an
espeak-ng corpus and the wheels a package-index-less GPU machine lacks into one folder to carry there."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
# What the GPU machine's Python lacks for the loader and the metrics (it has torch, numpy, numba, tqdm, …).
WHEELS = ("soundfile", "soxr", "jiwer", "rapidfuzz", "click", "cffi", "pycparser", "typing_extensions")
TINY_WORDS = "мама мыла раму утром солнце светит ярко над полем тихо шумит лес".split()


def make_tiny_shards(out: Path, n: int = 150) -> Path:
    """WAV + TXT pairs whose audio spells the text (one tone per letter, so there is something to learn), packed by
    the real `fastasr shard`: made in seconds without espeak-ng."""
    from fastasr.cli import main as fastasr_cli

    corpus = out.parent / "tiny_corpus"
    rng = np.random.default_rng(0)
    letters = sorted(set("".join(TINY_WORDS)))
    t = np.arange(int(0.07 * SR)) / SR
    for i in range(n):
        text = " ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 4))))
        tones = [np.sin(2 * np.pi * (250 + 90 * letters.index(c)) * t) * np.hanning(t.size) if c != " "
                 else np.zeros(t.size) for c in text]
        x = np.concatenate([np.zeros(800), *tones, np.zeros(800)])
        x = 0.5 * x + 0.01 * rng.standard_normal(x.size)
        path = corpus / f"d{i % 4}" / f"utt{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path.with_suffix(".wav")), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
        path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    if fastasr_cli(["shard", str(corpus), str(out), "--shard-size", "25", "--workers", "1"]) != 0:
        raise RuntimeError("fastasr shard failed on the tiny corpus")
    return out


def prepare(out: Path, utterances: int) -> int:
    """DIR/shards from an espeak-ng corpus and DIR/wheels for what the GPU machine lacks; prints the command."""
    from importlib.metadata import PackageNotFoundError, version

    from fastasr.cli import main as fastasr_cli

    out = out.resolve()
    shards, wheels = out / "shards", out / "wheels"
    if not (shards / "index.json").exists():
        with tempfile.TemporaryDirectory() as tmp:  # only the shards travel; the corpus stays behind
            corpus = Path(tmp) / "corpus"
            subprocess.run([sys.executable, str(ROOT / "tools" / "synth_corpus.py"), str(corpus),
                            "--utterances", str(utterances), "--seed", "0"], check=True)
            # 100 rows a shard: every loader worker of the small preset gets train shards of its own.
            if fastasr_cli(["shard", str(corpus), str(shards), "--manifest", str(corpus / "public_synth.csv"),
                            "--shard-size", "100"]) != 0:
                return 1
    for stale in wheels.glob("*.whl"):  # one version of each
        stale.unlink()

    def pinned(name):  # the versions this checkout is tested with here
        with contextlib.suppress(PackageNotFoundError):
            return f"{name}=={version(name)}"
        return name

    platforms = [x for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                               "manylinux2014_x86_64", "manylinux1_x86_64") for x in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels),
                    *map(pinned, WHEELS)], check=True)
    size = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2 ** 20 for d in (shards, wheels)}
    totals = json.loads((shards / "index.json").read_text())["totals"]
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\n{shards}: {size[shards]:.1f} MB, {totals['samples']} utterances, {totals['seconds'] / 3600:.2f} h\n"
          f"{wheels}: {size[wheels]:.1f} MB: {' '.join(sorted(p.name for p in wheels.glob('*.whl')))}\n\n"
          f"carry {rel} and run on the GPU machine from the repository root:\n"
          f"python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site {rel}/wheels/*.whl && "
          f"PYTHONPATH=/tmp/site:. python3 tools/gpu_check.py --device cuda --shards {rel}/shards "
          f"--out $OUT/gpu_check.json")
    if size[shards] + size[wheels] > 30:
        print(f"{rel} holds {size[shards] + size[wheels]:.1f} MB, over 30: use fewer --utterances", file=sys.stderr)
        return 1
    return 0
