"""The log-mel front end in NumPy: the Slaney mel filterbank and a NumPy twin of fastasr.model.features.LogMel.

Torch-free, so the ONNX runtime (fastasr.runtime) computes a model's features without PyTorch. ``LogMel`` builds
its filterbank buffer with ``mel_filterbank`` below; ``log_mel`` computes one utterance's features the way
``LogMel`` computes them for that utterance in a padded batch (see fastasr/model/features.py for every step):
centred STFT with zero padding (``1 + len // hop`` frames), periodic Hann window of ``win_length`` centred in
``n_fft``, power spectrum, Slaney filterbank, ``log(max(mel, log_floor))``, per-bin mean/variance normalisation
over the utterance's frames (population variance, ``norm_eps``).

``log_mel`` computes in float64 and returns float32. Against LogMel in float64 and against librosa it agrees to
1e-6 (float32 rounding of the output; the same arithmetic, another FFT); against LogMel in float32, what a
checkpoint's model is fed, the normalised features differ by float32 rounding in torch's STFT: tests/audio/test_mel.py
holds them within 5e-4 absolute (measured ≤ 1e-4 on 10 s of speech-like audio). On a trained model that difference
changes no transcript (benchmarks/RESULTS.md, "Export and runtime").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["MelSettings", "mel_filterbank", "log_mel"]


# ---- Slaney mel scale (librosa.hz_to_mel / mel_to_hz with htk=False) ---------------------------------------------

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 triangles equal to ``librosa.filters.mel`` (Slaney scale, Slaney norm)."""
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))  # (n_mels + 2,) band edges
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, F)
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # Slaney area normalisation
    return weights


@dataclass(frozen=True)
class MelSettings:
    """What a log-mel front end needs; LogMel's constructor arguments (f_max resolved: sr/2 when not given)."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-10
    normalize: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self):
        if not 0 < self.win_length <= self.n_fft or self.n_fft % 2:
            raise ValueError(f"need 0 < win_length <= n_fft and an even n_fft, got {self.win_length}, {self.n_fft}")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.log_floor <= 0:
            raise ValueError(f"hop_length, n_mels and log_floor must be positive: {self}")

    def to_dict(self) -> dict:
        return asdict(self)


_CACHE: dict[MelSettings, tuple[np.ndarray, np.ndarray]] = {}


def _constants(s: MelSettings) -> tuple[np.ndarray, np.ndarray]:
    """(n_fft,) window (periodic Hann of win_length centred in n_fft, as torch.stft pads it) and (F, n_mels)."""
    if s not in _CACHE:
        n = np.arange(s.win_length)
        window = np.zeros(s.n_fft)
        left = (s.n_fft - s.win_length) // 2
        window[left:left + s.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * n / s.win_length)
        fb = mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.f_min, s.f_max)
        _CACHE[s] = window, np.ascontiguousarray(fb.T)
    return _CACHE[s]


def log_mel(audio: np.ndarray, settings: MelSettings) -> np.ndarray:
    """(S,) audio → (1 + S // hop_length, n_mels) float32 log-mel features, normalised per utterance."""
    window, fb = _constants(settings)
    half = settings.n_fft // 2
    x = np.pad(np.asarray(audio, dtype=np.float64), half)  # centred frames, zeros beyond the signal
    frames = sliding_window_view(x, settings.n_fft)[::settings.hop_length]  # (T, n_fft)
    spec = np.fft.rfft(frames * window, axis=-1)  # (T, F)
    power = spec.real ** 2 + spec.imag ** 2
    feats = np.log(np.maximum(power @ fb, settings.log_floor))  # (T, n_mels)
    if settings.normalize:
        feats = (feats - feats.mean(0)) / np.sqrt(feats.var(0) + settings.norm_eps)
    return feats.astype(np.float32)
