"""The independent log-mel reference (librosa, float64) and speech-like test signals, for the front-end tests."""

import numpy as np
from optional import librosa

SR, N_FFT, WIN, HOP, N_MELS = 16000, 512, 400, 160, 80
FLOOR, EPS = 1e-10, 1e-5


def reference_logmel(y: np.ndarray) -> np.ndarray:
    """(T, n_mels) float64: librosa STFT (centred, zero padded) -> power -> librosa mel -> floor/log -> CMVN."""
    spec = librosa.stft(
        y.astype(np.float64), n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hann", center=True,
        pad_mode="constant",
    )
    mel = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, dtype=np.float64) @ (np.abs(spec) ** 2)
    logmel = np.log(np.maximum(mel, FLOOR))
    mean = logmel.mean(axis=1, keepdims=True)
    var = logmel.var(axis=1, keepdims=True)
    return ((logmel - mean) / np.sqrt(var + EPS)).T


def speech_like(rng, n):
    t = np.arange(n) / SR
    f0 = 110 + 50 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)), 0, None) ** 2
    y = env * voiced + 0.01 * rng.standard_normal(n)
    return (0.9 * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


LENGTHS = [16000, 12345, 7999, 400, 161, 160, 1]


RUSSIAN_TEXT = "съешь же ещё этих мягких французских булок да выпей чаю"


def espeak_russian(text: str = RUSSIAN_TEXT, voice: str = "m3") -> np.ndarray:
    """(S,) float32 16 kHz: `text` spoken by espeak-ng (tools/espeak_tts.py), resampled with soxr. Synthesised in
    a spawned process, as tests/synth_helpers.py does: espeak-ng's global state stays out of the test process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_espeak_16k, text, voice).result()


def _espeak_16k(text: str, voice: str) -> np.ndarray:
    import sys
    from pathlib import Path

    import soxr

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import espeak_tts

    engine = espeak_tts.Espeak()
    pcm = engine.synth(text, espeak_tts.VoiceSettings("ru", voice))
    return soxr.resample(pcm.astype(np.float32) / 32768.0, engine.sample_rate, SR).astype(np.float32)
