"""fastasr.kernels audio kernels against librosa (the seed's functions) and against their own single-array forms."""

import platform

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastasr.kernels import (normalize_preemphasize, normalize_preemphasize_ragged, peak_normalize,
                             peak_normalize_ragged, preemphasis, preemphasis_ragged)

librosa = pytest.importorskip("librosa")

SR = 16000
TINY32 = np.finfo(np.float32).tiny


def lr_normalize(x):
    return librosa.util.normalize(x)


def lr_preemphasis(x, coef=0.97):
    return librosa.effects.preemphasis(x, coef=coef)


def lr_both(x, coef=0.97):
    return lr_preemphasis(lr_normalize(x), coef)


def speech_like(rng, seconds, scale=0.3):
    """Harmonics of a gliding pitch under a syllable-rate envelope, plus noise and a DC offset."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    y = env * voiced + 0.02 * rng.standard_normal(t.size) + 0.01
    return (scale * y / np.abs(y).max()).astype(np.float32)


def signals():
    rng = np.random.default_rng(1234)
    return {
        "gauss": (0.1 * rng.standard_normal(20000)).astype(np.float32),
        "uniform_loud": rng.uniform(-1, 1, 5000).astype(np.float32),
        "quiet": (1e-6 * rng.standard_normal(3000)).astype(np.float32),
        "large": (1e4 * rng.standard_normal(3000)).astype(np.float32),
        "speech": speech_like(rng, 2.0),
        "speech_clipped": np.clip(speech_like(rng, 1.0, 3.0), -1, 1),
        "negative_peak": np.array([0.1, -0.9, 0.3, 0.2], np.float32),
    }


def assert_close(ours, ref, scale=1.0):
    # Bit-equal on x86-64 (scipy's lfilter and our kernels round the same float32 operations); the tolerance
    # leaves room for a platform whose compiler contracts a*b+c into an FMA.
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * max(1.0, scale))


@pytest.mark.parametrize("name", list(signals()))
def test_equal_to_librosa(name):
    x = signals()[name]
    before = x.copy()
    scale = float(np.abs(x).max())
    assert_close(peak_normalize(x), lr_normalize(x))
    assert_close(preemphasis(x), lr_preemphasis(x), 3 * scale)
    assert_close(normalize_preemphasize(x), lr_both(x), 3)
    np.testing.assert_array_equal(x, before)  # inputs are never modified


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="bit-equality checked on x86-64 only")
def test_bit_equal_to_librosa_on_x86():
    for x in signals().values():
        np.testing.assert_array_equal(peak_normalize(x), lr_normalize(x))
        np.testing.assert_array_equal(preemphasis(x), lr_preemphasis(x))
        np.testing.assert_array_equal(normalize_preemphasize(x), lr_both(x))


@pytest.mark.parametrize("coef", [0.0, 0.5, 0.97, 1.0])
def test_coef(coef):
    x = signals()["speech"]
    assert_close(preemphasis(x, coef=coef), lr_preemphasis(x, coef), 3)
    assert_close(normalize_preemphasize(x, coef=coef), lr_both(x, coef), 3)


def test_librosa_initial_state_is_the_filter_state():
    # librosa 0.11's default zi = 2*x[0] - x[1] enters as lfilter's state: y[0] = x[0] + zi (not x[0] - coef*zi).
    x = np.array([0.5, 0.25, -0.1], np.float32)
    y = preemphasis(x)
    assert y[0] == np.float32(0.5 + (2 * 0.5 - 0.25))
    assert y[1] == np.float32(0.25) - np.float32(0.97) * np.float32(0.5)
    np.testing.assert_array_equal(y, lr_preemphasis(x))


def test_silence_and_subnormal_peaks_are_left_unchanged():
    zeros = np.zeros(100, np.float32)
    np.testing.assert_array_equal(peak_normalize(zeros), lr_normalize(zeros))
    np.testing.assert_array_equal(peak_normalize(zeros), zeros)
    np.testing.assert_array_equal(normalize_preemphasize(zeros), zeros)
    sub = np.full(7, 1e-39, np.float32)  # below float32 tiny: librosa's threshold, left as is
    sub[3] = -5e-39
    np.testing.assert_array_equal(peak_normalize(sub), lr_normalize(sub))
    np.testing.assert_array_equal(peak_normalize(sub), sub)
    at = np.array([TINY32, -TINY32 / 2, 0], np.float32)  # exactly tiny: normalised
    np.testing.assert_array_equal(peak_normalize(at), lr_normalize(at))
    assert peak_normalize(at)[0] == 1.0


def test_one_and_two_samples():
    one = np.array([-0.3], np.float32)
    np.testing.assert_array_equal(peak_normalize(one), lr_normalize(one))
    with pytest.raises(ValueError):
        lr_preemphasis(one)
    with pytest.raises(ValueError, match="at least 2"):
        preemphasis(one)
    with pytest.raises(ValueError, match="at least 2"):
        normalize_preemphasize(one)
    two = np.array([0.3, -0.6], np.float32)
    np.testing.assert_array_equal(peak_normalize(two), lr_normalize(two))
    np.testing.assert_array_equal(preemphasis(two), lr_preemphasis(two))
    np.testing.assert_array_equal(normalize_preemphasize(two), lr_both(two))


def test_empty_is_an_error_as_in_librosa():
    empty = np.zeros(0, np.float32)
    with pytest.raises(ValueError):
        lr_normalize(empty)
    for f in (peak_normalize, preemphasis, normalize_preemphasize):
        with pytest.raises(ValueError, match="at least"):
            f(empty)


def test_float64_input_gives_float32_close_to_librosa_float64():
    x = speech_like(np.random.default_rng(5), 0.5).astype(np.float64)
    for ours, ref in [
        (peak_normalize(x), lr_normalize(x)),
        (preemphasis(x), lr_preemphasis(x)),
        (normalize_preemphasize(x), lr_both(x)),
    ]:
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    # ...and exactly what the float32 signal gives.
    np.testing.assert_array_equal(normalize_preemphasize(x), normalize_preemphasize(x.astype(np.float32)))


def test_non_contiguous_input():
    x = signals()["speech"]
    np.testing.assert_array_equal(normalize_preemphasize(x[::3]), lr_both(np.ascontiguousarray(x[::3])))


def test_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        peak_normalize(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        preemphasis(np.float32(1.0))
    with pytest.raises(TypeError, match="float32 or float64"):
        peak_normalize(np.arange(10, dtype=np.int16))
    with pytest.raises(ValueError, match="coef"):
        preemphasis(np.ones(4, np.float32), coef=float("nan"))


def test_non_finite():
    for bad in (np.array([0.1, np.nan, 0.2], np.float32), np.array([0.1, -np.inf, 0.2], np.float32)):
        with pytest.raises(librosa.util.exceptions.ParameterError):
            lr_normalize(bad)
        with pytest.raises(ValueError, match="finite"):
            peak_normalize(bad)
        with pytest.raises(ValueError, match="finite"):
            normalize_preemphasize(bad)
        # librosa's pre-emphasis does not check; neither do we.
        np.testing.assert_array_equal(preemphasis(bad), lr_preemphasis(bad))


# ---- ragged forms ------------------------------------------------------------------------------------------------


def ragged(rng, lens, scale=0.2):
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    flat = (scale * rng.standard_normal(offsets[-1])).astype(np.float32)
    return flat, offsets


def loop(f, flat, offsets, **kw):
    parts = [f(flat[offsets[b] : offsets[b + 1]], **kw) for b in range(len(offsets) - 1)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def test_ragged_equals_loop():
    rng = np.random.default_rng(7)
    lens = rng.integers(2, 4000, size=37)
    lens[5] = 2
    flat, off = ragged(rng, lens)
    flat[off[9] : off[10]] = 0  # a silent utterance in the batch
    flat[off[11] : off[12]] *= 1e4
    np.testing.assert_array_equal(peak_normalize_ragged(flat, off), loop(peak_normalize, flat, off))
    np.testing.assert_array_equal(preemphasis_ragged(flat, off, 0.9), loop(preemphasis, flat, off, coef=0.9))
    np.testing.assert_array_equal(
        normalize_preemphasize_ragged(flat, off), loop(normalize_preemphasize, flat, off)
    )
    b = 20
    seg = flat[off[b] : off[b + 1]]
    np.testing.assert_array_equal(normalize_preemphasize_ragged(flat, off)[off[b] : off[b + 1]], lr_both(seg))


def test_ragged_small_batches():
    empty = np.zeros(0, np.float32)
    for f in (peak_normalize_ragged, preemphasis_ragged, normalize_preemphasize_ragged):
        assert f(empty, np.array([0])).shape == (0,)
    x = signals()["speech"]
    np.testing.assert_array_equal(normalize_preemphasize_ragged(x, [0, x.size]), normalize_preemphasize(x))
    ones = np.array([0.5, -0.25, 1e-40], np.float32)
    np.testing.assert_array_equal(peak_normalize_ragged(ones, [0, 1, 2, 3]), loop(peak_normalize, ones, [0, 1, 2, 3]))
    np.testing.assert_array_equal(
        normalize_preemphasize_ragged(x.astype(np.float64), [0, 10, x.size]),
        loop(normalize_preemphasize, x, [0, 10, x.size]),
    )


def test_ragged_bad_offsets():
    flat = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="from 0 to flat.size"):
        peak_normalize_ragged(flat, [1, 10])
    with pytest.raises(ValueError, match="from 0 to flat.size"):
        peak_normalize_ragged(flat, [0, 9])
    with pytest.raises(ValueError, match="non-decreasing"):
        peak_normalize_ragged(flat, [0, 6, 4, 10])
    with pytest.raises(TypeError, match="integers"):
        peak_normalize_ragged(flat, np.array([0.0, 10.0]))
    with pytest.raises(ValueError, match="1-D"):
        peak_normalize_ragged(flat, np.array([[0, 10]]))
    with pytest.raises(ValueError, match="1-D"):
        peak_normalize_ragged(flat.reshape(2, 5), [0, 10])
    with pytest.raises(ValueError, match=r"utterance 1"):
        peak_normalize_ragged(flat, [0, 4, 4, 10])
    with pytest.raises(ValueError, match=r"at least 2 samples \(utterance 2\)"):
        normalize_preemphasize_ragged(flat, [0, 4, 8, 9, 10])
    with pytest.raises(ValueError, match=r"at least 2 samples \(utterance 1\)"):
        preemphasis_ragged(flat, [0, 9, 10])


def test_ragged_non_finite_names_the_utterance():
    flat = np.ones(12, np.float32)
    flat[7] = np.nan
    with pytest.raises(ValueError, match=r"utterance\(s\) \[1\]"):
        normalize_preemphasize_ragged(flat, [0, 4, 8, 12])
    with pytest.raises(ValueError, match=r"utterance\(s\) \[1\]"):
        peak_normalize_ragged(flat, [0, 4, 8, 12])


# ---- properties --------------------------------------------------------------------------------------------------

finite32 = st.floats(-1e3, 1e3, width=32, allow_subnormal=True)
signal32 = hnp.arrays(np.float32, st.integers(2, 300), elements=finite32)


@settings(max_examples=150, deadline=None)
@given(x=signal32, coef=st.sampled_from([0.0, 0.95, 0.97, 1.0]))
def test_property_equal_to_librosa(x, coef):
    scale = float(np.abs(x).max())
    assert_close(peak_normalize(x), lr_normalize(x))
    assert_close(preemphasis(x, coef), lr_preemphasis(x, coef), 3 * scale)
    assert_close(normalize_preemphasize(x, coef), lr_both(x, coef), 3)


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 400), elements=finite32),
    data=st.data(),
)
def test_property_ragged_equals_loop(x, data):
    # Cut x into utterances of at least 2 samples at sorted random points.
    n_cuts = data.draw(st.integers(0, max(0, x.size // 2 - 1)))
    cuts = sorted(data.draw(st.lists(st.integers(1, max(1, x.size // 2)), min_size=n_cuts, max_size=n_cuts)))
    offsets = [0] + [2 * c for c in cuts if 2 * c <= x.size - 2] + [x.size] if x.size >= 2 else [0]
    offsets = np.unique(offsets)
    if x.size < 2:
        x, offsets = x[:0], np.array([0])
    np.testing.assert_array_equal(peak_normalize_ragged(x, offsets), loop(peak_normalize, x, offsets))
    np.testing.assert_array_equal(preemphasis_ragged(x, offsets), loop(preemphasis, x, offsets))
    np.testing.assert_array_equal(
        normalize_preemphasize_ragged(x, offsets), loop(normalize_preemphasize, x, offsets)
    )


def test_ragged_sequential_equals_parallel():
    rng = np.random.default_rng(11)
    flat, off = ragged(rng, rng.integers(2, 3000, size=9))
    for f in (peak_normalize_ragged, preemphasis_ragged, normalize_preemphasize_ragged):
        np.testing.assert_array_equal(f(flat, off, parallel=False), f(flat, off, parallel=True))


def _child_runs_kernels(flat, off, queue):
    queue.put((normalize_preemphasize_ragged(flat, off), normalize_preemphasize(flat[off[0] : off[1]])))


def test_ragged_in_a_forked_child_after_the_parent_ran_it():
    # GNU OpenMP terminates a forked child entering a parallel region its parent used; DataLoader workers are such
    # children. The ragged forms go sequential there (and the single-array forms never use threads).
    import multiprocessing as mp

    rng = np.random.default_rng(12)
    flat, off = ragged(rng, [300, 200, 500])
    expected = normalize_preemphasize_ragged(flat, off)  # the parent starts the thread pool
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_kernels, args=(flat, off, queue))
    child.start()
    got_ragged, got_single = queue.get(timeout=120)
    child.join(30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got_ragged, expected)
    np.testing.assert_array_equal(got_single, expected[: off[1]])
