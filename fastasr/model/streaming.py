"""Streaming the Conformer encoder: chunk masks, dynamic chunk training, and the cached chunk step.

A streaming model (model.streaming) sees no future beyond the chunk a frame is in: self-attention is masked to the
frame's own chunk and `left_chunks` chunks before it, the depthwise convolution is causal, and the subsampling reads
nothing past its own window (fastasr.model.conformer). In training its encoder draws the chunk size per batch from
model.chunk_frames with torch's RNG (dynamic chunk training, as WeNet and icefall do), so one model serves several
latencies and a resumed run draws the same sizes; in evaluation the caller names the size.

`StreamingEncoder.step` runs one chunk of features with the caches of everything before it, passed in and handed
back (`EncoderCache`): fed an utterance chunk by chunk it gives `Encoder.forward(feats, lens, chunk_frames=C,
left_chunks=L)` to float rounding, for a ragged batch too (tests/model/test_streaming.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastasr.errors import UserError


def chunk_attention_mask(valid: torch.Tensor, chunk: int | None, left_chunks: int) -> torch.Tensor:
    """Which keys each frame attends to, for scaled_dot_product_attention: a frame in chunk k sees the frames of
    chunks max(0, k - left_chunks)..k (left_chunks -1: 0..k) that exist, never padding. chunk None or -1: every
    frame that exists, (B, 1, 1, T); else (B, 1, T, T). A padded frame attends to every frame that exists, so that
    no row is empty (its output is masked away and reaches no valid frame)."""
    if chunk is None or chunk == -1:
        return valid[:, None, None, :]
    T = valid.shape[1]
    k = torch.div(torch.arange(T, device=valid.device), chunk, rounding_mode="floor")  # (T,) each frame's chunk
    behind = k[:, None] - k[None, :]  # (T, T) query chunk - key chunk
    seen = (behind >= 0) & (behind <= left_chunks) if left_chunks >= 0 else behind >= 0
    return (valid[:, None, :] & (seen[None] | ~valid[:, :, None]))[:, None]


def draw_chunk_frames(sizes: tuple[int, ...]) -> int:
    """One of `sizes` (model.chunk_frames), uniformly, from torch's global RNG: the checkpointed RNG state makes a
    resumed run draw what the uninterrupted one would have."""
    return sizes[int(torch.randint(len(sizes), ()))]


class EncoderCache(NamedTuple):
    """What a stream carries from one chunk to the next. B streams, C = chunk_frames, W = left_chunks · C (grows by
    C per chunk when left_chunks is -1). A tuple of tensors, so that an exported graph can take and return it."""

    subsampling: tuple[torch.Tensor, ...]  # per conv layer: (B, C_in, 1, F_in) its input frame before the chunk
    keys: torch.Tensor  # (layers, B, heads, W, d_head) the rotated attention keys of the W frames before the chunk
    values: torch.Tensor  # (layers, B, heads, W, d_head) their values
    conv: torch.Tensor  # (layers, B, d_model, kernel - 1) the depthwise convolution's inputs before the chunk
    processed: torch.Tensor  # (B,) int64 encoder frames stepped so far (chunks · C), padding included
    seen: torch.Tensor  # (B,) int64 feature frames of the utterance accepted so far


class StreamingEncoder:
    """A streaming model's encoder run chunk by chunk at one chunk size and left context (settings, not state:
    the state is the EncoderCache each step takes and returns). Call it in eval mode, under torch.no_grad()."""

    def __init__(self, encoder, chunk_frames: int, left_chunks: int | None = None):
        assert encoder.streaming, "a non-streaming model reads the future: train it with model.streaming=true"
        assert chunk_frames >= 1, f"chunk_frames must be >= 1 for a stream, got {chunk_frames}"
        self.encoder, self.chunk = encoder, chunk_frames
        self.left = encoder.left_chunks if left_chunks is None else left_chunks
        self.factor = 2 ** encoder.subsampling.n_layers
        self.feature_frames = chunk_frames * self.factor  # feature frames per step: exactly C encoder frames

    def initial_caches(self, batch: int, *, dtype=torch.float32, device="cpu") -> EncoderCache:
        """The caches before a stream's first chunk: zeros (the convolutions' own padding), no frame seen."""
        enc, sub = self.encoder, self.encoder.subsampling
        block = enc.layers[0]
        heads, d = block.attn.heads, block.norm.normalized_shape[0]
        W = self.left * self.chunk if self.left >= 0 else 0
        frames, freqs = [], sub.n_mels
        for conv in sub.convs:
            frames.append(torch.zeros(batch, conv.in_channels, 1, freqs, dtype=dtype, device=device))
            freqs = (freqs - 1) // 2 + 1
        kv = torch.zeros(len(enc.layers), batch, heads, W, d // heads, dtype=dtype, device=device)
        conv = torch.zeros(len(enc.layers), batch, d, block.conv.context, dtype=dtype, device=device)
        start = torch.zeros(batch, dtype=torch.int64, device=device)
        return EncoderCache(tuple(frames), kv, kv.clone(), conv, start, start.clone())

    def step(self, feats: torch.Tensor, feat_lens: torch.Tensor,
             caches: EncoderCache) -> tuple[torch.Tensor, torch.Tensor, EncoderCache]:
        """feats (B, feature_frames, F): the next chunk of each stream, of which the first feat_lens (B,) frames
        exist (fewer than feature_frames only in a stream's last chunk, 0 after it). → encoder frames (B, C, D)
        (zeros where none exist), how many of them exist (B,), and the caches for the next chunk."""
        enc, C = self.encoder, self.chunk
        assert feats.shape[1] == self.feature_frames, f"a chunk is {self.feature_frames} frames, got {feats.shape}"
        sub, processed = enc.subsampling, caches.processed
        seen = caches.seen + feat_lens.to(processed.device)
        x, frames = sub.step(enc.normalize(feats), processed * self.factor, seen, caches.subsampling)  # (B, C, D)
        exist = sub.output_lengths(seen, sub.n_layers)  # (B,) encoder frames of each utterance so far
        W = caches.keys.shape[3]
        window = processed[:, None] + torch.arange(-W, C, device=processed.device)  # (B, W + C) frame indices
        key_valid = (window >= 0) & (window < exist[:, None])
        here, valid = window[:, W:], key_valid[:, W:]  # (B, C) this chunk's frames
        keep = self.left * C if self.left >= 0 else None
        keys, values, convs = [], [], []
        for i, layer in enumerate(enc.layers):
            x, k, v, cv = layer.step(x, valid, here, key_valid, caches.keys[i], caches.values[i], caches.conv[i],
                                     keep)
            keys.append(k)
            values.append(v)
            convs.append(cv)
        new = EncoderCache(frames, torch.stack(keys), torch.stack(values), torch.stack(convs), processed + C, seen)
        return x, valid.sum(1), new


FRAME_MS = 10  # the front ends' hop: one feature frame per 10 ms


def chunk_frames_of(config, chunk_ms: float, checkpoint) -> int:
    """Encoder frames per chunk for `chunk_ms` milliseconds (a whole number of subsampled frames); UserError for a
    model that was not trained to stream or a duration that is not a multiple of its frame."""
    frame = FRAME_MS * config.subsampling
    if not getattr(config, "streaming", False):
        raise UserError(f"--chunk-ms {chunk_ms:g}: {checkpoint} is not a streaming model (train one with "
                        "model.streaming=true); it sees the whole utterance")
    if chunk_ms <= 0 or chunk_ms % frame:
        raise UserError(f"--chunk-ms {chunk_ms:g}: must be a positive multiple of {frame} ms, the model's encoder "
                        f"frame ({FRAME_MS} ms x subsampling {config.subsampling})")
    return int(chunk_ms // frame)
