"""Peak-normalise + pre-emphasis of one batch, Numba kernels beside librosa and plain NumPy in the same run.

The batch: 64 speech-like utterances of 2–10 s at 16 kHz (float32), as the loader holds them after decoding.
Every implementation computes the same numbers (librosa.util.normalize then librosa.effects.preemphasis, coef 0.97;
the Numba ones are bit-equal, checked before timing). Numba compiles before the timed part (warm-up call).
extra_info: hours of audio per second (median) and the speed-up over librosa in this run, by median and by min.
Run: pytest benchmarks/test_kernels_bench.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np
import pytest

from fastasr.kernels import normalize_preemphasize, normalize_preemphasize_ragged

librosa = pytest.importorskip("librosa")

SR = 16000
N_UTTS = 64
COEF = 0.97
ROUNDS = 20

_means: dict = {}


def make_batch(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    utts = []
    for n in rng.integers(2 * SR, 10 * SR + 1, size=N_UTTS):
        t = np.arange(n) / SR
        env = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)), 0, None) ** 2
        y = env * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(n)
        utts.append((rng.uniform(0.05, 0.8) * y).astype(np.float32))
    return utts


UTTS = make_batch()
OFFSETS = np.concatenate([[0], np.cumsum([u.size for u in UTTS])]).astype(np.int64)
FLAT = np.concatenate(UTTS)
SECONDS = FLAT.size / SR


def librosa_loop():
    return [librosa.effects.preemphasis(librosa.util.normalize(u), coef=COEF) for u in UTTS]


def _numpy_one(u):
    peak = np.abs(u).max()
    y = u / peak if peak >= np.finfo(np.float32).tiny else u.copy()
    out = np.empty_like(y)
    out[0] = y[0] + (np.float32(2) * y[0] - y[1])  # librosa's default initial state
    np.multiply(y[:-1], np.float32(-COEF), out=out[1:])
    out[1:] += y[1:]
    return out


def numpy_loop():
    return [_numpy_one(u) for u in UTTS]


def numba_loop():
    return [normalize_preemphasize(u, COEF) for u in UTTS]


def numba_ragged():
    return normalize_preemphasize_ragged(FLAT, OFFSETS, COEF)


def numba_ragged_with_concat():
    # What a caller holding separate arrays pays: one concatenation, then the ragged kernel.
    return normalize_preemphasize_ragged(np.concatenate(UTTS), OFFSETS, COEF)


IMPLS = {
    "librosa": librosa_loop,
    "numpy": numpy_loop,
    "numba_loop": numba_loop,
    "numba_ragged": numba_ragged,
    "numba_ragged_with_concat": numba_ragged_with_concat,
}


@pytest.fixture(params=[1, None], ids=["1thread", "allthreads"])
def threads(request):
    """Numba's thread count (only the ragged kernels are parallel). One thread is the contention-proof comparison
    on a shared machine."""
    import numba

    saved = numba.get_num_threads()
    if request.param is not None:
        numba.set_num_threads(request.param)
    yield numba.get_num_threads()
    numba.set_num_threads(saved)


def _check(result):
    flat = result if isinstance(result, np.ndarray) else np.concatenate(result)
    ref = np.concatenate(librosa_loop())
    np.testing.assert_allclose(flat, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_normalize_preemphasis_64_utterances(benchmark, impl, threads):
    fn = IMPLS[impl]
    _check(fn())  # warm-up: Numba compiles (or loads its cache) here, outside the timed part
    benchmark.group = f"normalize+preemphasis, 64 utts 2-10 s, numba threads={threads}"
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    stats = benchmark.stats.stats
    _means[(impl, threads)] = stats
    benchmark.extra_info["audio_seconds"] = round(SECONDS, 1)
    benchmark.extra_info["hours_audio_per_s"] = round(SECONDS / 3600 / stats.median, 1)
    base = _means.get(("librosa", threads))
    if base is not None:  # by median, and by min (the contention-proof figure on a shared machine)
        benchmark.extra_info["x_librosa"] = round(base.median / stats.median, 2)
        benchmark.extra_info["x_librosa_min"] = round(base.min / stats.min, 2)
