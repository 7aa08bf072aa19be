"""Shard build rate at 1 and 2 workers, beside the cost of the verification alone (one process, no tar writing).

A few hundred 3–5 s speech-like 16 kHz mono Opus files are made once per session in a tmp dir. Each build starts
from an empty OUT (setup, untimed). extra_info carries utterances/s and hours of audio per second.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus_helpers import WORDS, write_utt  # noqa: E402

from fastasr.corpus.verify import verify  # noqa: E402
from fastasr.shards.writer import ShardOptions, build_shards  # noqa: E402

N_FILES = int(os.environ.get("FASTASR_BENCH_FILES", 320))
SHARD_SIZE = 20
ROUNDS = 5


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_corpus")
    rng = np.random.default_rng(0)
    seconds = 0.0
    for i in range(N_FILES):
        dur = float(rng.uniform(3.0, 5.0))
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(int(dur * 2)))
        write_utt(root, f"bench/{i % 4}/{i:03x}/u{i:04d}.opus", words, seconds=dur, seed=i)
        seconds += int(dur * 16000) / 16000
    return root, seconds


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the writer pool): on a shared, loaded machine the
    CPU cost per hour of audio stays meaningful when wall-clock ratios do not."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_cpu(fn, cpu: list):
    def wrapped():
        start = _cpu()
        result = fn()
        cpu.append(_cpu() - start)
        return result

    return wrapped


def _record(benchmark, n: int, seconds: float, cpu: list) -> None:
    if benchmark.stats is None:  # --benchmark-disable: the body ran once as a plain test
        return
    t = benchmark.stats.stats.median
    cpu_s = sorted(cpu)[len(cpu) // 2]
    benchmark.extra_info.update(
        cpu_seconds=round(cpu_s, 3),
        cpu_seconds_per_audio_hour=round(cpu_s / (seconds / 3600), 3),
        utterances=n,
        audio_hours=round(seconds / 3600, 4),
        utterances_per_s=round(n / t, 1),
        audio_hours_per_s=round(seconds / 3600 / t, 4),
        realtime_factor=round(seconds / t, 1),
        cpus=len(os.sched_getaffinity(0)),
    )


@pytest.mark.parametrize("mode", ["full", "header"])
def test_verify_only(benchmark, corpus, mode):
    root, seconds = corpus
    files = sorted(root.rglob("*.opus"))

    def run():
        total = 0
        for f in files:
            total += verify(f.read_bytes(), mode).frames
        return total

    cpu: list = []
    frames = benchmark.pedantic(_timed_cpu(run, cpu), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert frames == pytest.approx(seconds * 16000, abs=N_FILES)
    _record(benchmark, len(files), seconds, cpu)


@pytest.mark.parametrize("workers", [1, 2])
def test_build(benchmark, corpus, tmp_path, workers):
    root, seconds = corpus
    out = tmp_path / "out"

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        return (), {}

    def run():
        return build_shards(root, out, ShardOptions(shard_size=SHARD_SIZE), workers=workers, progress=False)

    cpu: list = []
    result = benchmark.pedantic(_timed_cpu(run, cpu), setup=fresh, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert result.index["totals"]["samples"] == N_FILES
    _record(benchmark, N_FILES, seconds, cpu)
