"""The Conformer encoder's pieces: convolutional subsampling and the blocks (feed-forward, self-attention with rotary
positions, convolution module, feed-forward).

Each piece runs over a whole padded batch (`forward`); the pieces that mix time also run over one chunk of a stream
with explicit caches (`step`, driven by fastasr.model.streaming), giving the same numbers as the chunk-masked
`forward` of a streaming model. A non-streaming model's `forward` is the arithmetic it always was.
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
    """log2(factor) stride-2 3×3 Conv2d layers (padding 1): T → ceil(T / 2) per layer, exactly.

    Already streamable as it is: an output frame t of a layer reads its input frames 2t-1..2t+1, so encoder frame s
    reads feature frames up to factor·s + factor - 1, the end of its own window, and never beyond. A chunk of
    factor·C feature frames therefore gives exactly C encoder frames, given each layer's last input frame from the
    chunk before (the step's cache). Causal left padding would only delay the last factor - 1 frames of every
    chunk to the next one without removing any latency."""

    def __init__(self, n_mels: int, channels: int, d_model: int, factor: int, streaming: bool = False):
        super().__init__()
        assert factor in (2, 4, 8), f"subsampling factor must be 2, 4 or 8, got {factor}"
        self.n_layers, self.n_mels, self.streaming = int(math.log2(factor)), n_mels, streaming
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
        if self.streaming:  # padded feature frames read as zeros, as the last chunk of a stream has them
            x = x * lengths_to_mask(lens, x.shape[1])[:, :, None]
        x = x[:, None]  # (B, 1, T, F)
        for conv in self.convs:
            x = F.relu(conv(x))  # (B, C, T', F')
            lens = self.output_lengths(lens, 1)
            # ReLU(bias) in padded frames would leak into the next layer's valid edge frames.
            x = x * lengths_to_mask(lens, x.shape[2])[:, None, :, None]
        return self._project(x), lens

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, Fq = x.shape
        return self.out(x.transpose(1, 2).reshape(B, T, C * Fq))  # (B, T', D)

    def step(self, x: torch.Tensor, start: torch.Tensor, seen: torch.Tensor,
             cache: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One chunk: x (B, factor·C, F) the feature frames from `start` (B,) on, of which the utterance's first
        `seen` (B,) exist; cache[i] (B, C_in, 1, F_in) layer i's input frame before the chunk (zeros at the start:
        the convolution's own padding). → (B, C, D) and the new cache."""
        x = (x * lengths_to_mask(seen - start, x.shape[1])[:, :, None])[:, None]  # (B, 1, T, F)
        new = []
        for conv, before in zip(self.convs, cache):
            new.append(x[:, :, -1:])
            x = F.relu(F.conv2d(torch.cat([before, x], 2), conv.weight, conv.bias, stride=2, padding=(0, 1)))
            seen, start = self.output_lengths(seen, 1), torch.div(start, 2, rounding_mode="floor")
            x = x * lengths_to_mask(seen - start, x.shape[2])[:, None, :, None]
        return self._project(x), tuple(new)


def rotary(x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position embedding over the last dim of (B, heads, T, d_head): relative positions, no table.

    positions: None, frames 0..T-1 with float32 angles (the non-streaming model's arithmetic, kept bit for bit); or
    the frames' absolute indices, (T,) or (B, T), with angles in float64 for float64 inputs, so that a cached key
    rotated at its own index in an earlier chunk matches the whole-utterance one to float64 rounding."""
    T, d = x.shape[-2], x.shape[-1]
    if positions is None:
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
        ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]  # (T, d/2)
    else:
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=wide) / d))
        ang = positions.to(wide)[..., None] * inv  # (T, d/2) or (B, T, d/2)
        ang = ang[:, None] if ang.ndim == 3 else ang  # (B, 1, T, d/2): the same for every head
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
    def __init__(self, d: int, heads: int, dropout: float, streaming: bool = False):
        super().__init__()
        assert d % heads == 0, f"d_model {d} not divisible by heads {heads}"
        self.heads, self.dropout, self.streaming = heads, dropout, streaming
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor):
        B, T, D = x.shape
        return self.qkv(self.norm(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)

    def _attend(self, q, k, v, attn_mask, shape) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.out(y.transpose(1, 2).reshape(shape)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """attn_mask: (B, 1, T, T) which keys each frame sees (streaming.chunk_attention_mask); None: every valid
        frame."""
        q, k, v = self._qkv(x)
        positions = torch.arange(x.shape[1], device=x.device) if self.streaming else None
        q, k = rotary(q, positions), rotary(k, positions)  # (B, h, T, dh)
        if attn_mask is None:
            attn_mask = mask[:, None, None, :]  # (B, 1, 1, T) keys that exist
        return self._attend(q, k, v, attn_mask, x.shape)

    def step(self, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
             keys: torch.Tensor, values: torch.Tensor, keep: int | None):
        """x (B, C, D) one chunk, at `positions` (B, C), `valid` (B, C) where frames exist; keys, values
        (B, h, W, dh) the rotated keys and the values of the W frames before it; key_valid (B, W + C) which of
        those W + C frames exist. → (B, C, D) and the last `keep` (None: all) keys and values for the next chunk."""
        q, k, v = self._qkv(x)
        q, k = rotary(q, positions), rotary(k, positions)
        k, v = torch.cat([keys, k], 2), torch.cat([values, v], 2)  # (B, h, W + C, dh)
        # As chunk_attention_mask: a padded frame attends to every key, so that no row is empty (NaN).
        attn_mask = (key_valid[:, None, :] | ~valid[:, :, None])[:, None]  # (B, 1, C, W + C)
        y = self._attend(q, k, v, attn_mask, x.shape)
        first = 0 if keep is None else k.shape[2] - keep
        return y, k[:, :, first:], v[:, :, first:]


class ConvModule(nn.Module):
    """Pointwise → GLU → depthwise → LayerNorm (not BatchNorm: padding-safe, no DDP sync) → SiLU → pointwise.

    Streaming: the depthwise convolution is causal (kernel - 1 frames of left padding, none on the right). The norm
    stays LayerNorm: it normalises each frame alone, so a chunk normalises exactly as the whole utterance does, in
    training as in inference, with nothing to cache; BatchNorm's training statistics mix frames across time, chunks
    and padding, and its running statistics differ from them at inference."""

    def __init__(self, d: int, kernel: int, dropout: float, causal: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.causal, self.context = causal, kernel - 1
        self.dw = nn.Conv1d(d, d, kernel, padding=0 if causal else kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def _glu(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1) * mask[:, None, :]  # (B, D, T)

    def _tail(self, y: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm2(y.transpose(1, 2))).transpose(1, 2)
        return self.drop(self.pw2(y).transpose(1, 2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self._glu(x, mask)
        return self._tail(self.dw(F.pad(y, (self.context, 0)) if self.causal else y))

    def step(self, x: torch.Tensor, valid: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, D) one chunk; cache (B, D, kernel - 1) the depthwise convolution's inputs before it."""
        y = torch.cat([cache, self._glu(x, valid)], 2)  # (B, D, kernel - 1 + C)
        return self._tail(self.dw(y)), y[:, :, y.shape[2] - self.context:]


class ConformerBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ff1 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.attn = SelfAttention(c.d_model, c.n_heads, c.dropout, streaming=c.streaming)
        self.conv = ConvModule(c.d_model, c.conv_kernel, c.dropout, causal=c.streaming)
        self.ff2 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.norm = nn.LayerNorm(c.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask, attn_mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x) * mask[..., None]

    def step(self, x, valid, positions, key_valid, keys, values, conv, keep):
        """One chunk through the block (SelfAttention.step, ConvModule.step) → (B, C, D), keys, values, conv."""
        x = x + 0.5 * self.ff1(x)
        y, keys, values = self.attn.step(x, valid, positions, key_valid, keys, values, keep)
        x = x + y
        y, conv = self.conv.step(x, valid, conv)
        x = x + y
        x = x + 0.5 * self.ff2(x)
        return self.norm(x) * valid[..., None], keys, values, conv
