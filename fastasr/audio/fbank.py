"""The "kaldi" front end in NumPy: the log-mel filterbank sherpa-onnx computes for a NeMo transducer.

An export is also run by sherpa-onnx (``OfflineRecognizer.from_transducer(..., model_type="nemo_transducer")``),
which computes its features itself with kaldi-native-fbank (knf) and feeds them to the encoder. A model trained on
fastasr's own log-mel (``fastasr.audio.mel``) would see other numbers there, so this module reproduces sherpa's
features, and ``fastasr.model.fbank.KaldiFbank`` computes the same on the GPU for training. What sherpa-onnx 2.0.1
does (read from its source and knf 1.22.4's, the version it builds with; the line numbers are in the tests):

- samples as given, in [-1, 1] (``normalize_samples = true``); no dither (``dither = 0``);
- frames of 25 ms (400 samples) every 10 ms (160), ``snip_edges = false``: ``(N + hop // 2) // hop`` frames, frame
  ``f`` starts at ``f * hop + hop // 2 - win // 2`` and samples outside the signal are mirrored at its ends, the edge
  sample repeated (-1 → 0, N → N - 1; again and again for a signal shorter than the overhang);
- per frame: no DC-offset removal (sherpa sets ``remove_dc_offset = false`` for NeMo), pre-emphasis 0.97 within the
  frame (``x[i] - 0.97 x[i-1]``, and ``x[0] - 0.97 x[0]`` for the first sample), the Povey window
  ``(0.5 - 0.5 cos(2 pi i / (win - 1))) ** 0.85``, zero-padded to 512 for the FFT; power spectrum;
- librosa's mel filterbank (``is_librosa``: Slaney scale, Slaney area norm) of ``feat_dim`` bins from 0 Hz to
  7600 Hz (sherpa's ``high_freq = -400`` below Nyquist; only ``low_freq`` is set to 0 for NeMo);
- natural log with a guard that depends on the normalisation: sherpa's NeMo models with a ``normalize_type`` use
  ``log(mel + 2**-24)``, without one knf's default ``log(max(mel, FLT_EPSILON))``;
- ``normalize_type = "per_feature"``: per mel bin over the utterance's frames, ``(x - mean) / (std + 1e-5)`` with the
  population std (divide by N, centred values), the epsilon added to the std, not the variance.

knf computes in float32; ``kaldi_fbank`` computes in float64 and returns float32, so it is knf's arithmetic without
its rounding (tests/audio/test_fbank.py holds the difference and states what it measured). The fastasr loader's
signal-level pre-emphasis must be off for this front end: the pre-emphasis here is per frame, as sherpa does it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastasr.audio.mel import mel_filterbank  # knf's librosa mode builds the same Slaney triangles

__all__ = ["FbankSettings", "FBANK_METHOD", "FLT_EPSILON", "NEMO_LOG_EPS", "kaldi_fbank", "num_frames",
           "frame_layout", "reflect_index", "window_function", "constants"]

FLT_EPSILON = float(np.finfo(np.float32).eps)  # 2**-23: knf's hard log floor, log(max(mel, eps))
NEMO_LOG_EPS = 2.0 ** -24  # FLT_EPSILON / 2: sherpa's additive guard for NeMo models, log(mel + eps)
WINDOWS = ("povey", "hann", "hanning", "hamming", "rectangular")
LOG_GUARDS = ("add", "max")

# How the features are computed beyond FbankSettings' numbers; recorded beside them (to_dict) so a reader of
# model.json sees the whole recipe, and checked by from_dict so a recipe this module does not compute is refused.
FBANK_METHOD = {"type": "kaldi_fbank", "snip_edges": False, "edges": "symmetric_reflection", "dither": 0.0,
                "preemphasis_scope": "per_frame", "power": 2.0, "mel_scale": "slaney", "mel_norm": "slaney",
                "log": "natural", "normalization": "per_feature_mean_std", "std": "population",
                "frames": "(samples + hop_length // 2) // hop_length"}


@dataclass(frozen=True)
class FbankSettings:
    """Every number of the kaldi front end; the defaults are sherpa-onnx's for an 80-bin NeMo transducer whose
    model says ``normalize_type=per_feature``. ``sherpa_nemo`` gives sherpa's settings for other bins or none."""

    sample_rate: int = 16000
    win_length: int = 400  # samples (25 ms)
    hop_length: int = 160  # samples (10 ms)
    n_fft: int = 512  # win_length rounded up to a power of two
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 7600.0
    preemphasis: float = 0.97
    window: str = "povey"
    remove_dc_offset: bool = False
    log_guard: str = "add"  # "add": log(mel + log_eps); "max": log(max(mel, log_eps))
    log_eps: float = NEMO_LOG_EPS
    normalize: bool = True  # per_feature: (x - mean) / (std + norm_eps) per bin over the utterance
    norm_eps: float = 1e-5

    @classmethod
    def sherpa_nemo(cls, n_mels: int = 80, normalize: bool = True, sample_rate: int = 16000) -> FbankSettings:
        """What sherpa-onnx computes for a NeMo transducer with ``feat_dim=n_mels`` and ``normalize_type``
        "per_feature" (normalize) or "" / "NA": the log guard follows the normalisation there."""
        guard, eps = ("add", NEMO_LOG_EPS) if normalize else ("max", FLT_EPSILON)
        return cls(sample_rate=sample_rate, win_length=sample_rate // 40, hop_length=sample_rate // 100,
                   n_fft=1 << (sample_rate // 40 - 1).bit_length(), n_mels=n_mels, f_max=sample_rate / 2 - 400.0,
                   log_guard=guard, log_eps=eps, normalize=normalize)

    @classmethod
    def sherpa_nemo_online(cls, n_mels: int = 80, sample_rate: int = 16000) -> FbankSettings:
        """What sherpa-onnx's OnlineRecognizer computes for a NeMo transducer (2.0.1,
        online-recognizer-transducer-nemo-impl.h PostInit): a Hann window, librosa's mel from 0 Hz to Nyquist,
        knf's log guard and no normalisation (the online path has none): a streaming model's front end."""
        return cls(sample_rate=sample_rate, win_length=sample_rate // 40, hop_length=sample_rate // 100,
                   n_fft=1 << (sample_rate // 40 - 1).bit_length(), n_mels=n_mels, f_max=sample_rate / 2,
                   window="hann", log_guard="max", log_eps=FLT_EPSILON, normalize=False)

    def __post_init__(self):
        if not 0 < self.win_length <= self.n_fft or self.n_fft % 2:
            raise ValueError(f"need 0 < win_length <= n_fft and an even n_fft, got {self.win_length}, {self.n_fft}")
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"sample_rate, hop_length and n_mels must be positive: {self.sample_rate}, "
                             f"{self.hop_length}, {self.n_mels}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {self.f_min}, {self.f_max}")
        if not 0 <= self.preemphasis <= 1:
            raise ValueError(f"preemphasis must be in [0, 1] (knf checks it), got {self.preemphasis}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.log_guard not in LOG_GUARDS:
            raise ValueError(f"log_guard must be one of {LOG_GUARDS}, got {self.log_guard!r}")
        if not self.log_eps > 0 or not self.norm_eps >= 0:
            raise ValueError(f"log_eps must be positive and norm_eps >= 0, got {self.log_eps}, {self.norm_eps}")

    def to_dict(self) -> dict:
        """A plain dict of every setting and the fixed recipe (FBANK_METHOD), for model.json."""
        return {**FBANK_METHOD, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> FbankSettings:
        """The settings a to_dict() wrote; ValueError when the recipe differs from the one computed here."""
        for key, want in FBANK_METHOD.items():
            if key in d and d[key] != want:
                raise ValueError(f"kaldi_fbank computes {key}={want!r}, the settings say {d[key]!r}")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def num_frames(num_samples: int, hop_length: int) -> int:
    """knf's NumFrames with snip_edges=false: the signal length over the hop, rounded to the nearest integer."""
    return (num_samples + hop_length // 2) // hop_length


def frame_layout(win_length: int, hop_length: int) -> tuple[int, int, int]:
    """(left, right, first): how much to pad a signal on each side so that every frame lies inside it, and where
    frame 0 starts in the padded signal. Frame f starts at ``f * hop + hop // 2 - win // 2`` of the signal, so at
    most ``win // 2 - hop // 2`` samples before it and ``win - win // 2`` after its end are read."""
    left = max(0, win_length // 2 - hop_length // 2)
    return left, win_length - win_length // 2, left + hop_length // 2 - win_length // 2


def reflect_index(i: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Index i of a signal of n samples mirrored into [0, n) the way knf's ExtractWindow does (-1 → 0,
    n → n - 1, repeated for far-out indices): the signal extended with period 2n. Works on NumPy and torch."""
    m = i % (2 * n)
    return (2 * n - 1 - m) * (m >= n) + m * (m < n)


def window_function(kind: str, win_length: int) -> np.ndarray:
    """(win_length,) float64, knf's GetWindow: symmetric windows over win_length - 1, Hann periodic."""
    i = np.arange(win_length, dtype=np.float64)
    a = 2 * math.pi / (win_length if kind == "hann" else max(win_length - 1, 1))
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    if kind in ("hann", "hanning"):
        return 0.5 - 0.5 * np.cos(a * i)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    if kind == "rectangular":
        return np.ones(win_length)
    raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}")


_CACHE: dict[FbankSettings, tuple[np.ndarray, np.ndarray]] = {}


def constants(s: FbankSettings) -> tuple[np.ndarray, np.ndarray]:
    """(win_length,) window and (n_fft // 2 + 1, n_mels) filterbank, float64, cached per settings."""
    if s not in _CACHE:
        fb = mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.f_min, s.f_max)  # (n_mels, F)
        _CACHE[s] = window_function(s.window, s.win_length), np.ascontiguousarray(fb.T)
    return _CACHE[s]


def _log_mel(power: np.ndarray, fb: np.ndarray, s: FbankSettings) -> np.ndarray:
    mel = power @ fb  # (T, n_mels)
    return np.log(mel + s.log_eps) if s.log_guard == "add" else np.log(np.maximum(mel, s.log_eps))


def frame_features(frames: np.ndarray, s: FbankSettings) -> np.ndarray:
    """(T, win) raw frames, float64 → (T, n_mels) log-mel, float64, before any normalisation: each frame alone."""
    window, fb = constants(s)
    if s.remove_dc_offset:
        frames = frames - frames.mean(axis=1, keepdims=True)
    emph = np.empty_like(frames)  # (T, win)
    emph[:, 1:] = frames[:, 1:] - s.preemphasis * frames[:, :-1]
    emph[:, 0] = frames[:, 0] * (1.0 - s.preemphasis)
    spec = np.fft.rfft(emph * window, n=s.n_fft, axis=-1)  # (T, F)
    return _log_mel(spec.real ** 2 + spec.imag ** 2, fb, s)


def kaldi_fbank(samples: np.ndarray, settings: FbankSettings) -> np.ndarray:
    """(S,) samples in [-1, 1] → ((S + hop // 2) // hop, n_mels) float32: what sherpa-onnx feeds a NeMo encoder."""
    s = settings
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (S,), got shape {x.shape}")
    t = num_frames(x.size, s.hop_length)
    if t == 0:
        return np.zeros((0, s.n_mels), np.float32)
    left, right, first = frame_layout(s.win_length, s.hop_length)
    n = x.size
    padded = np.concatenate([x[reflect_index(np.arange(-left, 0), n)], x,
                             x[reflect_index(np.arange(n, n + right), n)]])  # (left + S + right,)
    frames = sliding_window_view(padded[first:], s.win_length)[::s.hop_length][:t]  # (T, win)
    feats = frame_features(frames, s)  # (T, n_mels)
    if s.normalize:
        feats = (feats - feats.mean(0)) / (feats.std(0) + s.norm_eps)
    return feats.astype(np.float32)
