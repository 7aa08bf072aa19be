"""The "kaldi" front end as a torch module: sherpa-onnx's NeMo-transducer features, batched, on any device.

``KaldiFbank`` computes for a zero-padded batch (B, S) what ``fastasr.audio.fbank.kaldi_fbank`` computes for each
utterance alone — the features sherpa-onnx feeds a NeMo transducer's encoder (every step and where it was read from
is in that module's docstring) — so a model trained on them runs in sherpa-onnx unchanged. It has ``LogMel``'s call
interface: ``forward(audio, audio_lens) -> (feats (B, T, n_mels), feat_lens)`` and ``output_lengths``.

Padding never leaks into an utterance: with ``snip_edges=false`` its first frame and last two or three read past
its ends, where knf mirrors *that utterance's* samples. The batch is laid out in a padded buffer with each
utterance's mirrored edges written next to it (one gather for the left edges and one gather + scatter for the right
ones, whatever the batch size), then framed with ``unfold`` and transformed with one ``rfft``. Frames at and past
``feat_lens`` are 0, whatever the padding held (NaN included), and the per-feature statistics use valid frames only.
The output has the padded width's frame count, ``(S + hop // 2) // hop``, without a device sync.

Features are computed in float32 with autocast off (float64 input stays float64, which tests compare with the
float64 NumPy twin); the window and filterbank come from ``fastasr.audio.fbank``, the twin's own constants.
"""

from __future__ import annotations

import torch
from torch import nn

from fastasr.audio.fbank import FbankSettings, constants, frame_layout, num_frames, reflect_index
from fastasr.model.features import audio_batch_dtype, valid_mask

__all__ = ["KaldiFbank", "FbankSettings"]


class KaldiFbank(nn.Module):
    """sherpa-onnx's NeMo log-mel: ``normalize`` is the model's ``normalize_type`` ("per_feature" or "NA").

    ``settings`` overrides everything (tests, other front ends); by default the settings are sherpa's for
    ``n_mels`` bins at ``sample_rate`` (``FbankSettings.sherpa_nemo``)."""

    def __init__(self, n_mels: int = 80, normalize: bool = True, sample_rate: int = 16000, *,
                 settings: FbankSettings | None = None):
        super().__init__()
        s = settings if settings is not None else FbankSettings.sherpa_nemo(n_mels, normalize, sample_rate)
        self.fbank = s
        self.sample_rate, self.n_mels, self.normalize = s.sample_rate, s.n_mels, s.normalize
        self.win_length, self.hop_length, self.n_fft = s.win_length, s.hop_length, s.n_fft
        window, fb = constants(s)  # (win,), (F, n_mels) float64
        # Derived from the settings, so not saved in checkpoints (persistent=False).
        self.register_buffer("window", torch.from_numpy(window).float(), persistent=False)  # (win,)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)  # (F, n_mels)
        self._f64 = window, fb  # float64 input gets float64 constants, not float32 ones upcast

    def settings(self) -> dict:
        """Every setting as a plain dict (``FbankSettings.to_dict``), for model.json."""
        return self.fbank.to_dict()

    def extra_repr(self) -> str:
        s = self.fbank
        return (f"sample_rate={s.sample_rate}, win_length={s.win_length}, hop_length={s.hop_length}, "
                f"n_fft={s.n_fft}, n_mels={s.n_mels}, f_max={s.f_max}, normalize={s.normalize}")

    def output_lengths(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """knf's frame count with snip_edges=false: ``(len + hop // 2) // hop`` (int64)."""
        hop = self.hop_length
        return torch.div(audio_lens.to(torch.int64) + hop // 2, hop, rounding_mode="floor")

    def _constants(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype == torch.float64:
            return tuple(torch.from_numpy(c).to(device) for c in self._f64)
        return self.window.to(device=device, dtype=dtype), self.mel_fb.to(device=device, dtype=dtype)

    def _frames(self, x: torch.Tensor, lens: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, S) audio → (B, n_frames, win) raw frames, each utterance mirrored at its own ends."""
        bsz, size = x.shape
        left, right, first = frame_layout(self.win_length, self.hop_length)
        n = lens.clamp_min(1)[:, None]  # (B, 1); an empty utterance has no frames, any index will do
        pad = x.new_zeros(bsz, left + size + right)  # (B, left + S + right)
        pad[:, left:left + size] = x
        if left:
            i = torch.arange(-left, 0, device=x.device)[None, :]  # (1, left)
            pad[:, :left] = x.gather(1, reflect_index(i, n))  # (B, left)
        j = n + torch.arange(right, device=x.device)[None, :]  # (B, right) indices past each end
        pad.scatter_(1, left + j, x.gather(1, reflect_index(j, n)))  # overwrites padding and what follows it
        return pad[:, first:].unfold(1, self.win_length, self.hop_length)[:, :n_frames]  # (B, T, win)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = audio_batch_dtype(audio, audio_lens)
        device = audio.device
        if audio_lens.device.type == "cpu" and audio_lens.numel():  # free here; on a GPU it would cost a sync
            if int(audio_lens.min()) < 0 or int(audio_lens.max()) > audio.shape[1]:
                raise ValueError(f"audio_lens must be in [0, {audio.shape[1]}], got {audio_lens.tolist()}")
        lens = audio_lens.to(device=device, dtype=torch.int64)
        feat_lens = self.output_lengths(lens)
        n_frames = num_frames(audio.shape[1], self.hop_length)  # as LogMel: the padded width's, no device sync
        s = self.fbank
        if n_frames == 0:
            return audio.new_zeros(audio.shape[0], 0, s.n_mels, dtype=dtype), feat_lens
        window, mel_fb = self._constants(device, dtype)
        with torch.autocast(device_type=device.type, enabled=False):
            frames = self._frames(audio.to(dtype), lens, n_frames)  # (B, T, win)
            if s.remove_dc_offset:
                frames = frames - frames.mean(-1, keepdim=True)
            p = s.preemphasis
            emph = torch.cat([frames[..., :1] * (1.0 - p), frames[..., 1:] - p * frames[..., :-1]], -1)  # (B, T, win)
            spec = torch.fft.rfft(emph * window, n=s.n_fft)  # (B, T, F)
            mel = torch.matmul(torch.view_as_real(spec).pow(2).sum(-1), mel_fb)  # (B, T, n_mels)
            feats = (mel + s.log_eps).log() if s.log_guard == "add" else mel.clamp_min(s.log_eps).log()
            valid = valid_mask(feat_lens, n_frames).unsqueeze(-1)  # (B, T, 1)
            feats = torch.where(valid, feats, 0.0)  # (B, T, n_mels), padding's NaN or inf gone
            if s.normalize:
                count = feat_lens.clamp_min(1).to(dtype)[:, None, None]  # (B, 1, 1)
                mean = feats.sum(1, keepdim=True) / count  # (B, 1, n_mels)
                centred = torch.where(valid, feats - mean, 0.0)  # (B, T, n_mels)
                std = (centred.pow(2).sum(1, keepdim=True) / count).sqrt()  # (B, 1, n_mels), population
                feats = centred / (std + s.norm_eps)
        return feats, feat_lens
