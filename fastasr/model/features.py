"""Log-mel features and SpecAugment as torch modules that run on the padded batch's device.

``LogMel`` turns a zero-padded batch of audio (B, S) into normalised log-mel features (B, T, n_mels) with exact
per-utterance lengths, and each utterance's features are the ones it would get alone (no dependence on how much
padding the batch added):

- ``torch.stft(center=True, pad_mode="constant")``: every frame is centred on ``t * hop`` with zeros beyond the
  signal, so utterance b has ``1 + len_b // hop`` frames and the frames near its end see the same zeros in a batch as
  alone (samples past ``audio_lens`` are zeroed first, whatever the batch held there). Periodic Hann window of
  ``win_length`` centred in ``n_fft`` (librosa's ``stft(window="hann")``).
- power spectrum ``|X|^2``, then the mel filterbank of ``librosa.filters.mel(sr, n_fft, n_mels)`` with librosa's
  defaults: **Slaney** mel scale (``htk=False``: linear below 1 kHz, logarithmic above) and **Slaney** area
  normalisation (``norm="slaney"``: each triangle scaled by 2 / its width in Hz), fmin 0, fmax sr/2. It is built in
  NumPy float64 by ``fastasr.audio.mel`` (no librosa at run time; the ONNX runtime's NumPy log-mel uses the same
  function) and kept as a buffer.
- natural log with a floor: ``log(max(mel, log_floor))``, ``log_floor = 1e-10`` (-23.03), so silence is finite.
- per-utterance, per-mel-bin mean/variance normalisation over the valid frames only (population variance):
  ``(x - mean) / sqrt(var + norm_eps)``, ``norm_eps = 1e-5``; padded frames are set to 0.

Features are computed in float32 even under autocast (float64 input stays float64, which tests use to compare with a
float64 NumPy/librosa reference at 1e-9).
"""

from __future__ import annotations

import torch
from torch import nn

from fastasr.audio.mel import mel_filterbank  # NumPy, shared with the torch-free runtime's log-mel

__all__ = ["LogMel", "SpecAugment", "mel_filterbank", "feature_lengths"]


def feature_lengths(audio_lens: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Frames of a centred STFT: ``1 + len // hop`` (int64)."""
    return torch.div(audio_lens, hop_length, rounding_mode="floor").to(torch.int64) + 1


def valid_mask(lens: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lens.device)[None, :] < lens[:, None]  # (B, size)


def audio_batch_dtype(audio: torch.Tensor, audio_lens: torch.Tensor) -> torch.dtype:
    """The dtype a front end computes a padded (B, S) batch in (float64 for float64 input, tests and references;
    float32 otherwise), after checking the shapes; ValueError naming them."""
    if audio.dim() != 2:
        raise ValueError(f"audio must be (B, S), got shape {tuple(audio.shape)}")
    if audio_lens.shape != audio.shape[:1]:
        raise ValueError(f"audio_lens must be ({audio.shape[0]},), got {tuple(audio_lens.shape)}")
    return torch.float64 if audio.dtype == torch.float64 else torch.float32


class LogMel(nn.Module):
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-10,
        normalize: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if not 0 < win_length <= n_fft:
            raise ValueError(f"need 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}")
        if hop_length <= 0 or n_mels <= 0 or log_floor <= 0:
            raise ValueError(f"hop_length, n_mels and log_floor must be positive: {hop_length}, {n_mels}, {log_floor}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = sample_rate / 2.0 if f_max is None else float(f_max)
        self.log_floor = log_floor
        self.normalize = normalize
        self.norm_eps = norm_eps
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        # Derived from the config, so not saved in checkpoints (persistent=False).
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)  # (n_mels, F)
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        self._mel_fb64 = fb  # float64 input (tests, references) gets float64 constants, not float32 ones upcast

    def _constants(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype == torch.float64:
            window = torch.hann_window(self.win_length, periodic=True, dtype=dtype, device=device)
            return window, torch.from_numpy(self._mel_fb64).to(device)
        return self.window.to(device=device, dtype=dtype), self.mel_fb.to(device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, log_floor={self.log_floor}"
        )

    def output_lengths(self, audio_lens: torch.Tensor) -> torch.Tensor:
        return feature_lengths(audio_lens, self.hop_length)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = audio_batch_dtype(audio, audio_lens)
        device = audio.device
        audio_lens = audio_lens.to(device=device, dtype=torch.int64)
        window, mel_fb = self._constants(device, dtype)
        with torch.autocast(device_type=device.type, enabled=False):
            x = audio.to(dtype) * valid_mask(audio_lens, audio.shape[1])  # (B, S), zeros past each length
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )  # (B, F, T)
            power = torch.view_as_real(spec).pow(2).sum(-1)  # (B, F, T)
            mel = torch.matmul(mel_fb, power)  # (B, n_mels, T)
            feats = mel.clamp_min(self.log_floor).log().transpose(1, 2)  # (B, T, n_mels)

            feat_lens = self.output_lengths(audio_lens)
            valid = valid_mask(feat_lens, feats.shape[1]).unsqueeze(-1)  # (B, T, 1)
            if self.normalize:
                n = feat_lens.clamp_min(1).to(dtype)[:, None, None]  # (B, 1, 1)
                mean = (feats * valid).sum(1, keepdim=True) / n  # (B, 1, n_mels)
                var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / n
                feats = (feats - mean) * torch.rsqrt(var + self.norm_eps)
            feats = feats * valid
        return feats, feat_lens


class SpecAugment(nn.Module):
    """Frequency and time masks (Park et al. 2019, without time warping), drawn on the features' device.

    Per utterance: ``freq_masks`` bands of width uniform in [0, freq_width] channels, and ``time_masks`` spans of
    width uniform in [0, W_b] frames where ``W_b = floor(time_width * len_b)`` when ``time_width`` is a float (a
    fraction of that utterance's valid length) or ``min(time_width, len_b)`` when it is an int. Masks may overlap.
    Only frames before ``feat_lens[b]`` are touched, so padding keeps its value. Identity in eval mode. Randomness
    comes from torch's generator on the features' device, so ``torch.manual_seed`` reproduces the masks.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 10,
        time_width: float | int = 0.05,
        mask_value: float = 0.0,
    ):
        super().__init__()
        if freq_masks < 0 or time_masks < 0 or freq_width < 0 or time_width < 0:
            raise ValueError("mask counts and widths must be >= 0")
        if isinstance(time_width, float) and time_width > 1:
            raise ValueError(f"a float time_width is a fraction of the length, got {time_width}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.mask_value = mask_value

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}"
        )

    @staticmethod
    def _spans(size: int, max_width: torch.Tensor, limit: torch.Tensor, n: int) -> torch.Tensor:
        """(B, size) bool: n spans per row, width uniform in [0, max_width], start uniform in [0, limit - width]."""
        b = limit.shape[0]
        u = torch.rand(b, n, 2, device=limit.device)  # (B, n, 2)
        width = (u[..., 0] * (max_width[:, None] + 1)).floor().long().minimum(max_width[:, None])  # (B, n)
        start = (u[..., 1] * (limit[:, None] - width + 1)).floor().long()  # (B, n)
        start = start.minimum((limit[:, None] - width).clamp_min(0))
        pos = torch.arange(size, device=limit.device)  # (size,)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, n, size)
        return inside.any(1)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """fill: (F,) what masked values become per bin (a streaming model's global mean: what its encoder reads as
        zero); None: mask_value."""
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats
        if feats.dim() != 3:
            raise ValueError(f"feats must be (B, T, F), got shape {tuple(feats.shape)}")
        bsz, t, f = feats.shape
        lens = feat_lens.to(device=feats.device, dtype=torch.int64).clamp(0, t)
        mask = torch.zeros(bsz, t, f, dtype=torch.bool, device=feats.device)
        if self.freq_masks and self.freq_width:
            f_all = torch.full((bsz,), f, dtype=torch.int64, device=feats.device)
            fmask = self._spans(f, f_all.clamp(max=self.freq_width), f_all, self.freq_masks)  # (B, F)
            mask |= fmask[:, None, :]
        if self.time_masks and self.time_width:
            if isinstance(self.time_width, float):
                tmax = (lens.double() * self.time_width).floor().long()
            else:
                tmax = lens.clamp(max=int(self.time_width))
            tmask = self._spans(t, tmax, lens, self.time_masks)  # (B, T)
            mask |= tmask[:, :, None]
        mask &= valid_mask(lens, t)[:, :, None]
        if fill is not None:
            return torch.where(mask, fill.to(device=feats.device, dtype=feats.dtype), feats)
        return feats.masked_fill(mask, self.mask_value)
