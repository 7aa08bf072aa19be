"""Shard build rate at 1 and 2 workers, beside the cost of the verification alone (one process, no tar writing),
and the cost of the read bounds (issue #21: regular files only, header, rate, duration and size checked before a
file is read) against the checks as they were before them, side by side in one run.

A few hundred 3–5 s speech-like 16 kHz mono Opus files are made once per session in a tmp dir. Each build starts
from an empty OUT (setup, untimed). extra_info carries utterances/s and hours of audio per second.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus_helpers import WORDS, write_utt  # noqa: E402

import fastasr.shards.writer as writer  # noqa: E402
from fastasr.corpus.checks import Filters, Reject, Sample, chars_per_second  # noqa: E402
from fastasr.corpus.verify import AudioRejected, verify  # noqa: E402
from fastasr.shards.writer import ShardOptions, build_shards  # noqa: E402
from fastasr.text.normalization import TextRejected, normalize  # noqa: E402

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


def unbounded_check_row(row, text_config, filters):
    """check_row as it was before the read bounds, for whole files (all the bench corpus holds): the audio and the
    transcript read whole, then verified from memory; no header, rate, size or file-kind check first."""
    data = Path(row.audio).read_bytes()
    raw = Path(row.text_path).read_bytes().decode("utf-8-sig").strip()
    try:
        text = normalize(raw, text_config)
        info = verify(data, filters.verify)
    except (TextRejected, AudioRejected) as err:
        return Reject(row.label, err.reason, err.detail)
    if not filters.min_duration <= info.duration <= filters.max_duration:
        return Reject(row.label, "duration", f"{info.duration:.3f} s")
    if not filters.min_cps <= chars_per_second(text, info.duration) <= filters.max_cps:
        return Reject(row.label, "speaking_rate")
    return Sample(row.key, row.source, row.audio.rsplit(".", 1)[-1].lower(), data, text, raw, info.duration,
                  info.sample_rate, info.channels)


@pytest.mark.parametrize("mode", ["full", "header"])
def test_build_read_bounds_cost(benchmark, corpus, tmp_path, mode):
    """The one-worker build with the read bounds (timed by pytest-benchmark) and, in each round's setup, the same
    build with the checks as they were (timed here): the rounds interleave, so a change in the machine's load
    hits both. extra_info: the medians of both and their ratio (CPU and wall)."""
    root, seconds = corpus
    out, base_out = tmp_path / "out", tmp_path / "base"
    options = ShardOptions(shard_size=SHARD_SIZE, filters=Filters(verify=mode))
    base_cpu, base_wall = [], []

    def baseline():
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(base_out, ignore_errors=True)
        real, writer.check_row = writer.check_row, unbounded_check_row
        try:
            cpu0, wall0 = _cpu(), time.perf_counter()
            result = build_shards(root, base_out, options, workers=1, progress=False)
            base_wall.append(time.perf_counter() - wall0)
            base_cpu.append(_cpu() - cpu0)
        finally:
            writer.check_row = real
        assert result.index["totals"]["samples"] == N_FILES
        return (), {}

    def run():
        return build_shards(root, out, options, workers=1, progress=False)

    cpu: list = []
    result = benchmark.pedantic(_timed_cpu(run, cpu), setup=baseline, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert result.index["totals"]["samples"] == N_FILES
    assert _shards(out) == _shards(base_out)  # the same dataset, byte for byte
    _record(benchmark, N_FILES, seconds, cpu)
    if benchmark.stats is not None:
        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        benchmark.extra_info.update(
            baseline_cpu_seconds=round(median(base_cpu), 3), baseline_wall_seconds=round(median(base_wall), 3),
            cpu_ratio=round(median(cpu) / median(base_cpu), 4),
            wall_ratio=round(benchmark.stats.stats.median / median(base_wall), 4))


def _shards(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/shard-*.tar"))}
