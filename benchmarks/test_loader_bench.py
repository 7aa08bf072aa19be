"""Loader throughput, padding and memory, each beside its baseline in the same run.

Corpus: a few hundred 1.5–8 s speech-like 16 kHz mono Opus files (Open STT's format), made once per session in a
tmp dir, packed into shards by tests/data_shards.py (tarfile) and also kept as loose files for the seed's path.

- throughput: hours of audio per second for one epoch of build_loader (shards → padded batches, worker start
  included) at 1 and 2 workers, beside decode-only on one core over the same bytes (the ceiling) and the seed's
  per-file path (librosa.load + normalize + preemphasis + stft; at sr=16000 and at librosa's default 22050).
  The paths are measured interleaved, round by round, so that load from other jobs hits them alike; the ratios
  use the best round of each (extra_info).
- padding: padded samples / total samples over an epoch, shuffled order with buckets, beside random batching.
- memory: RSS of the loader's process and its workers before/after many epochs.
"""

from __future__ import annotations

import io
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_shards import Utt, encode, speech_like, write_shards  # noqa: E402

from fastasr.data import build_loader  # noqa: E402
from fastasr.data.bucketing import DurationBuckets, PaddedSecondsBudget, geometric_edges  # noqa: E402
from fastasr.data.sample import Sample  # noqa: E402
from fastasr.data.stages import bucket_batches, shuffle_buffer  # noqa: E402

# FASTASR_BENCH_LOADER_FILES=1600 gives a corpus of ~2.2 h, where worker start-up no longer weighs on the epoch.
N_FILES = int(os.environ.get("FASTASR_BENCH_LOADER_FILES", "320"))
SHARD = 20
ROUNDS = 4
BATCH_SECONDS = 60.0
TEXT = "мама мыла раму утром"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader_bench")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(N_FILES):
        dur = float(rng.uniform(1.5, 8.0))
        audio = encode(speech_like(dur, 16000, 1, i), 16000, "opus")
        utts.append(Utt(f"bench/{i % 4}/u{i:05d}", "opus", audio, TEXT, sf.info(io.BytesIO(audio)).duration,
                        16000, 1))
        (root / "files").mkdir(exist_ok=True)
        (root / "files" / f"u{i:05d}.opus").write_bytes(audio)
    write_shards(root / "shards", utts, [SHARD] * (N_FILES // SHARD))
    return root, utts, sum(u.duration for u in utts)


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def decode_only(utts) -> int:
    n = 0
    for u in utts:
        audio = sf.read(io.BytesIO(u.audio), dtype="float32")[0]
        n += audio.size
        float(audio.sum())  # every path reads its output once, as a consumer would
    return n


def loader_epoch(shards: Path, workers: int) -> int:
    n = 0
    for b in build_loader(shards, max_batch_seconds=BATCH_SECONDS, num_workers=workers, seed=0, pin_memory=False):
        n += int(b.audio_lens.sum())
        # A consumer reads the batch (the first touch of the worker's shared memory is here), with NumPy: a torch
        # CPU reduction would wake torch's OpenMP pool, whose threads spin-wait after each op and took ~9 ms of CPU
        # per batch from the workers here (gone with OMP_WAIT_POLICY=PASSIVE): a cost of that consumer, not of
        # the loader, and one a GPU training loop (which only copies the batch) does not pay.
        float(b.audio.numpy().sum())
    return n


def seed_path(files: Path, sr: int | None = 16000) -> int:
    """sr=16000: no resampling for these 16 kHz files (the kindest reading of the seed); sr=22050 is
    librosa.load's default, which resamples every file."""
    import librosa

    n = 0
    for path in sorted(files.glob("*.opus")):
        y, _ = librosa.load(path, sr=sr)
        y = librosa.effects.preemphasis(librosa.util.normalize(y))
        n += librosa.stft(y).shape[1]
    return n


def test_throughput_loader_vs_decode_vs_seed(benchmark, corpus):
    root, utts, seconds = corpus
    import librosa

    librosa.stft(np.zeros(4096, np.float32))  # warm-ups outside the timed part (imports, Numba, FFT plans)
    loader_epoch(root / "shards", 0)
    kinds = {
        "decode_1core": lambda: decode_only(utts),
        "loader_1w": lambda: loader_epoch(root / "shards", 1),
        "loader_2w": lambda: loader_epoch(root / "shards", 2),
        "seed_path": lambda: seed_path(root / "files"),
        "seed_path_default_sr": lambda: seed_path(root / "files", sr=22050),
    }
    wall = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}

    def one_round():
        for k, fn in kinds.items():
            c, t = cpu_seconds(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(cpu_seconds() - c)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    hours = seconds / 3600
    info = benchmark.extra_info
    info["audio_hours"] = hours
    for k in kinds:
        info[f"{k}_hours_per_s_best"] = hours / min(wall[k])
        info[f"{k}_hours_per_s_median"] = hours / float(np.median(wall[k]))
        info[f"{k}_cpu_s_per_audio_hour"] = float(np.median(cpu[k])) / hours
    best = {k: hours / min(v) for k, v in wall.items()}
    info["ratio_1w_over_decode"] = best["loader_1w"] / best["decode_1core"]
    info["ratio_2w_over_1w"] = best["loader_2w"] / best["loader_1w"]
    info["ratio_2w_over_seed"] = best["loader_2w"] / best["seed_path"]
    info["ratio_1w_over_seed"] = best["loader_1w"] / best["seed_path"]
    info["ratio_2w_over_seed_default_sr"] = best["loader_2w"] / best["seed_path_default_sr"]
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()})


def test_decode_only_one_core(benchmark, corpus):
    _, utts, seconds = corpus
    benchmark.pedantic(decode_only, args=(utts,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["hours_per_s"] = seconds / 3600 / benchmark.stats.stats.min


@pytest.mark.parametrize("workers", [1, 2])
def test_loader_epoch(benchmark, corpus, workers):
    root, _, seconds = corpus
    benchmark.pedantic(loader_epoch, args=(root / "shards", workers), rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)
    benchmark.extra_info["hours_per_s"] = seconds / 3600 / benchmark.stats.stats.min


def padded_fraction(batches) -> float:
    total = padded = 0.0
    for b in batches:
        longest = max(s.duration for s in b.samples)
        total += longest * len(b.samples)
        padded += sum(longest - s.duration for s in b.samples)
    return padded / total


def test_padding_bucketed_vs_random(benchmark, corpus):
    """Padded fraction over an epoch: buckets (ratio 1.03) vs random batching of the same shuffled order.

    Durations: the bench corpus' own epoch (real loader, decoded lengths) and 100k durations drawn like Open STT's
    (log-normal, median ~3 s, 0.5–20 s), through the same batching stage with a 1000-sample shuffle buffer.
    """
    root, _, _ = corpus
    rng = np.random.default_rng(1)
    ds = np.clip(rng.lognormal(np.log(3.0), 0.6, 100_000), 0.5, 20.0)
    samples = [Sample(f"k{i}", float(d), "", np.zeros(1, np.int64), b"") for i, d in enumerate(ds)]
    budget = PaddedSecondsBudget(BATCH_SECONDS)

    def batches(edges):
        shuffled = shuffle_buffer(iter(samples), size=1000, rng=np.random.default_rng(2))
        return list(bucket_batches(shuffled, buckets=DurationBuckets(edges), budget=budget, epoch=0,
                                   rng=np.random.default_rng(3)))

    bucketed = benchmark.pedantic(batches, args=(geometric_edges(),), rounds=3, iterations=1)
    random_ = batches(())
    real_pad = real_total = 0
    for b in build_loader(root / "shards", max_batch_seconds=BATCH_SECONDS, num_workers=1, seed=0):
        real_total += b.audio.numel()
        real_pad += b.audio.numel() - int(b.audio_lens.sum())
    info = benchmark.extra_info
    info["padded_fraction_bucketed_100k"] = padded_fraction(bucketed)
    info["padded_fraction_random_100k"] = padded_fraction(random_)
    info["batches_bucketed_100k"], info["batches_random_100k"] = len(bucketed), len(random_)
    info["padded_fraction_loader_epoch"] = real_pad / real_total
    print(dict(info))
    assert info["padded_fraction_bucketed_100k"] <= 0.02


def test_memory_flat_over_epochs(benchmark, corpus):
    """RSS (loader process + its workers) after epoch 2 and after epoch 30 of an infinite stream (2 workers)."""
    import psutil

    root, _, _ = corpus
    small = root / "small"
    if not small.exists():
        rng = np.random.default_rng(5)
        utts = []
        for i in range(40):
            audio = encode(speech_like(float(rng.uniform(0.5, 2.0)), 16000, 1, 1000 + i), 16000, "opus")
            utts.append(Utt(f"m/u{i:04d}", "opus", audio, TEXT, sf.info(io.BytesIO(audio)).duration, 16000, 1))
        write_shards(small, utts, [10] * 4)
    me = psutil.Process()

    def rss() -> int:
        return me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))

    marks = {}

    def run():
        for b in build_loader(small, max_batch_seconds=8.0, num_workers=2, seed=0, infinite=True):
            if b.epoch == 2 and "after_epoch_2" not in marks:
                marks["after_epoch_2"] = rss()
            if b.epoch == 30:
                marks["after_epoch_30"] = rss()
                break

    benchmark.pedantic(run, rounds=1, iterations=1)
    info = benchmark.extra_info
    info["rss_mb_after_epoch_2"] = marks["after_epoch_2"] / 2**20
    info["rss_mb_after_epoch_30"] = marks["after_epoch_30"] / 2**20
    info["rss_growth_mb"] = info["rss_mb_after_epoch_30"] - info["rss_mb_after_epoch_2"]
    print(dict(info))


def unbounded_decode(sample, max_duration=None, waveform="peak_preemphasis"):
    """decode_audio as it was before the read bounds: the bytes decoded whole, no header check first."""
    from fastasr.audio.files import PREEMPHASIS, mono_16k
    from fastasr.data.errors import SampleError
    from fastasr.kernels import normalize_preemphasize

    try:
        x, sr = sf.read(io.BytesIO(sample.audio_bytes), dtype="float32", always_2d=True)
    except Exception as exc:
        raise SampleError("decode", str(exc)) from None
    x = mono_16k(x, sr * sample.speed)
    if x.size < 2:
        raise SampleError("too_short", f"{x.size} samples after decoding")
    try:
        return normalize_preemphasize(x, PREEMPHASIS)
    except ValueError as exc:
        raise SampleError("decode", str(exc)) from None


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_read_bounds_cost(benchmark, corpus, monkeypatch, workers):
    """One epoch with the read bounds (tar member headers, the audio header against the plan, rate and channels)
    beside the same epoch with them switched off (member checks a no-op, decode_audio as before), interleaved
    round by round so the machine's load hits both alike; both deliver the same samples. extra_info: the medians
    (CPU and wall) and their ratios. Forked workers inherit the patched functions."""
    import fastasr.data.stages as stages

    root, _, seconds = corpus
    checked, unchecked = stages.decode_audio, unbounded_decode
    real_refuse = stages.refuse_member
    loader_epoch(root / "shards", 0)  # warm-up (Numba, imports)
    wall = {"bounded": [], "unbounded": []}
    cpu = {"bounded": [], "unbounded": []}
    n = {}

    def epoch(kind):
        bounded = kind == "bounded"
        monkeypatch.setattr(stages, "decode_audio", checked if bounded else unchecked)
        monkeypatch.setattr(stages, "refuse_member", real_refuse if bounded else (lambda info, ext: None))
        c, t = cpu_seconds(), time.perf_counter()
        n[kind] = loader_epoch(root / "shards", workers)
        wall[kind].append(time.perf_counter() - t)
        cpu[kind].append(cpu_seconds() - c)

    def one_round():
        for kind in ("unbounded", "bounded"):
            epoch(kind)

    benchmark.pedantic(one_round, rounds=ROUNDS * 2, iterations=1)
    monkeypatch.undo()
    assert n["bounded"] == n["unbounded"]  # the bounds skip nothing of a sound corpus
    info = benchmark.extra_info
    hours = seconds / 3600
    for kind in wall:
        info[f"{kind}_wall_s_median"] = float(np.median(wall[kind]))
        info[f"{kind}_cpu_s_median"] = float(np.median(cpu[kind]))
        info[f"{kind}_hours_per_s_median"] = hours / float(np.median(wall[kind]))
    info["wall_ratio_bounded_over_unbounded"] = info["bounded_wall_s_median"] / info["unbounded_wall_s_median"]
    info["cpu_ratio_bounded_over_unbounded"] = info["bounded_cpu_s_median"] / info["unbounded_cpu_s_median"]
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()})
