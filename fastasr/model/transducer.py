"""The RNN-Transducer: convolutional subsampling → encoder (Conformer or BiLSTM) → LSTM predictor → joiner.

The joiner is `act(enc_proj[:, :, None] + pred_proj[:, None]) -> Linear(H, V)` (DESIGN.md); training never builds
that 4-D tensor but hands `enc_proj`, `pred_proj` and the output layer's weight and bias to `fused_rnnt_loss`.
Padded frames are masked after every layer that mixes time, so a batched utterance encodes exactly as it does alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastasr.model.config import ModelConfig


def lengths_to_mask(lens: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]  # (B, T) True where valid


class ConvSubsampling(nn.Module):
    """log2(factor) stride-2 3×3 Conv2d layers (padding 1): T → ceil(T / 2) per layer, exactly."""

    def __init__(self, n_mels: int, channels: int, d_model: int, factor: int):
        super().__init__()
        assert factor in (2, 4, 8), f"subsampling factor must be 2, 4 or 8, got {factor}"
        self.n_layers = int(math.log2(factor))
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, 3, stride=2, padding=1) for i in range(self.n_layers))
        f = n_mels
        for _ in range(self.n_layers):
            f = (f - 1) // 2 + 1
        self.out = nn.Linear(channels * f, d_model)

    @staticmethod
    def output_lengths(lens: torch.Tensor, n_layers: int) -> torch.Tensor:
        for _ in range(n_layers):
            lens = torch.div(lens - 1, 2, rounding_mode="floor") + 1
        return lens

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x[:, None]  # (B, 1, T, F)
        for conv in self.convs:
            x = F.relu(conv(x))  # (B, C, T', F')
            lens = self.output_lengths(lens, 1)
            # ReLU(bias) in padded frames would leak into the next layer's valid edge frames.
            x = x * lengths_to_mask(lens, x.shape[2])[:, None, :, None]
        B, C, T, Fq = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fq))  # (B, T', D)
        return x, lens


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over the last dim of (B, heads, T, d_head): relative positions, no table."""
    T, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]  # (T, d/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(d * mult, d), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        assert d % heads == 0, f"d_model {d} not divisible by heads {heads}"
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q), rotary(k)  # (B, h, T, dh)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, T) keys that exist
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.out(y.transpose(1, 2).reshape(B, T, D)))


class ConvModule(nn.Module):
    """Pointwise → GLU → depthwise → LayerNorm (not BatchNorm: padding-safe, no DDP sync) → SiLU → pointwise."""

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)  # (B, D, T)
        y = self.dw(y * mask[:, None, :])
        y = F.silu(self.norm2(y.transpose(1, 2))).transpose(1, 2)
        return self.drop(self.pw2(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ff1 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.attn = SelfAttention(c.d_model, c.n_heads, c.dropout)
        self.conv = ConvModule(c.d_model, c.conv_kernel, c.dropout)
        self.ff2 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.norm = nn.LayerNorm(c.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x) * mask[..., None]


class Encoder(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.kind = c.encoder
        self.subsampling = ConvSubsampling(c.n_mels, c.subsampling_channels, c.d_model, c.subsampling)
        if c.encoder == "conformer":
            self.layers = nn.ModuleList(ConformerBlock(c) for _ in range(c.n_layers))
        elif c.encoder == "lstm":
            self.lstm = nn.LSTM(c.d_model, c.d_model // 2, num_layers=c.n_layers, batch_first=True,
                                bidirectional=True, dropout=c.dropout if c.n_layers > 1 else 0.0)
        else:
            raise ValueError(f"unknown encoder {c.encoder!r}; use 'conformer' or 'lstm'")

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = self.subsampling(feats, feat_lens)  # (B, T', D)
        mask = lengths_to_mask(lens, x.shape[1])
        if self.kind == "conformer":
            for layer in self.layers:
                x = layer(x, mask)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=mask.shape[1])
        return x, lens


class Predictor(nn.Module):
    """Embedding + LSTM over the label history; blank (0) is the start symbol."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.pred_embed)
        self.lstm = nn.LSTM(c.pred_embed, c.pred_hidden, num_layers=c.pred_layers, batch_first=True,
                            dropout=c.dropout if c.pred_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, tokens: torch.Tensor, state=None):
        y, state = self.lstm(self.drop(self.embed(tokens)), state)  # (B, U, H)
        return self.drop(y), state


class Joiner(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.enc_proj = nn.Linear(c.d_model, c.joint_dim)
        self.pred_proj = nn.Linear(c.pred_hidden, c.joint_dim)
        self.out = nn.Linear(c.joint_dim, c.vocab_size)

    def forward(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """Logits for matching shapes (broadcast by the caller), e.g. (N, H) + (N, H) → (N, V)."""
        return self.out(torch.tanh(enc_proj + pred_proj))


class Transducer(nn.Module):
    blank = 0

    def __init__(self, c: ModelConfig):
        super().__init__()
        assert c.vocab_size > 1, f"vocab_size must be set from the tokenizer, got {c.vocab_size}"
        self.config = c
        self.encoder = Encoder(c)
        self.predictor = Predictor(c)
        self.joiner = Joiner(c)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T, F) → projected encoder output (B, T', H) for the joiner and exact lengths (B,)."""
        enc, lens = self.encoder(feats, feat_lens)
        return self.joiner.enc_proj(enc), lens

    def predict(self, tokens: torch.Tensor, state=None):
        """Labels (B, U) → projected predictor output (B, U, H) and the LSTM state."""
        y, state = self.predictor(tokens, state)
        return self.joiner.pred_proj(y), state

    def encoded_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        """The encoder's output frames per utterance: the same arithmetic as ``encode``, on any device."""
        sub = self.encoder.subsampling
        return sub.output_lengths(feat_lens, sub.n_layers)

    def forward(self, feats, feat_lens, tokens, token_lens, host_lengths=None) -> torch.Tensor:
        """Mean RNN-T loss per utterance. The joint + loss run fused: under autocast the joint's GEMMs take
        autocast's dtype (bf16 on the tensor cores), while log-softmax, the lattice and the gradient sums stay
        float32.

        host_lengths: (encoded_lengths(feat_lens), token_lens) computed on the CPU from the CPU batch, which spares
        the loss its one device-to-host copy (the step then never waits for the GPU). The loss lives in forward
        (not a side method) so DistributedDataParallel's forward hook sees the call.
        """
        from fastasr.loss import fused_rnnt_loss

        enc, enc_lens = self.encode(feats, feat_lens)  # (B, T', H)
        start = torch.full((tokens.shape[0], 1), self.blank, dtype=tokens.dtype, device=tokens.device)
        pred, _ = self.predict(torch.cat([start, tokens], dim=1))  # (B, U+1, H)
        out = self.joiner.out
        return fused_rnnt_loss(enc, pred, out.weight, out.bias, tokens, enc_lens, token_lens, blank=self.blank,
                               reduction="mean", activation="tanh", host_lengths=host_lengths)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _lstm_parameters(inputs: int, hidden: int, layers: int, directions: int = 1) -> int:
    per_layer_direction = [4 * hidden * ((inputs if i == 0 else hidden * directions) + hidden + 2)
                           for i in range(layers)]
    return directions * sum(per_layer_direction)


def parameter_count(c: ModelConfig) -> int:
    """count_parameters(Transducer(c)) from the settings alone, without allocating: a checkpoint's weights are
    checked against it before its model is built, so a file of a few bytes cannot make a reader build a huge model
    (tests/model/test_transducer.py holds it equal to the built model's count)."""
    d, linear = c.d_model, (lambda i, o: i * o + o)
    channels, freqs, convs = c.subsampling_channels, c.n_mels, int(math.log2(c.subsampling))
    n = 0
    for i in range(convs):
        n += linear(9 * (1 if i == 0 else channels), channels)
        freqs = (freqs - 1) // 2 + 1
    n += linear(channels * freqs, d)
    if c.encoder == "conformer":
        ff = 2 * d + linear(d, d * c.ff_mult) + linear(d * c.ff_mult, d)
        attn = 2 * d + linear(d, 3 * d) + linear(d, d)
        conv = 2 * d + linear(d, 2 * d) + linear(c.conv_kernel, d) + 2 * d + linear(d, d)
        n += c.n_layers * (2 * ff + attn + conv + 2 * d)
    else:
        n += _lstm_parameters(d, d // 2, c.n_layers, directions=2)
    n += c.vocab_size * c.pred_embed + _lstm_parameters(c.pred_embed, c.pred_hidden, c.pred_layers)
    return n + linear(d, c.joint_dim) + linear(c.pred_hidden, c.joint_dim) + linear(c.joint_dim, c.vocab_size)


def log_mel(c: ModelConfig):
    """The feature front end a model of this config was trained with: fastasr.model.features.LogMel ("logmel") or
    fastasr.model.fbank.KaldiFbank ("kaldi"); each maps (audio (B, S), lengths (B,)) → (feats (B, T, n_mels),
    lengths (B,)), fed the waveform that waveform_of(c) names."""
    if c.frontend == "kaldi":
        from fastasr.model.fbank import KaldiFbank

        return KaldiFbank(n_mels=c.n_mels)
    from fastasr.model.features import LogMel

    return LogMel(n_mels=c.n_mels)


def waveform_of(c: ModelConfig) -> str:
    """How the model's front end wants the 16-kHz waveform (fastasr.audio.files.WAVEFORMS)."""
    return "raw" if c.frontend == "kaldi" else "peak_preemphasis"
