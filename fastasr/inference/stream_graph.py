"""A streaming model's encoder as one graph: its chunk step with the caches packed as sherpa-onnx's online NeMo
transducers take them (CacheLayout), the chunk and left context to export, and the inputs to trace and check it
with (fastasr.inference.export writes and checks the graph)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastasr.errors import UserError
from fastasr.model.streaming import EncoderCache, StreamingEncoder, chunk_frames_of
from fastasr.model.transducer import Transducer

DEFAULT_CHUNK_MS = 640  # a streaming model's exported chunk: icefall's and WeNet's usual 640 ms


class StreamingEncoderGraph(nn.Module):
    """One chunk step of a streaming model's encoder (fastasr.model.streaming.StreamingEncoder.step) in the calling
    convention of sherpa-onnx's online NeMo transducers (fastasr.runtime.model_dir): channels first, through the
    joiner's encoder projection, the caches packed into NeMo's three (`pack_caches`)."""

    def __init__(self, model: Transducer, chunk_frames: int, left_chunks: int):
        super().__init__()
        self.model = model
        self.stream = StreamingEncoder(model.encoder, chunk_frames, left_chunks)
        self.layout = CacheLayout.of(self.stream)

    def forward(self, features, feature_lengths, cache_last_channel, cache_last_time, cache_last_channel_len):
        cache = self.layout.unpack(cache_last_channel, cache_last_time, cache_last_channel_len)
        x, lens, new = self.stream.step(features.transpose(1, 2), feature_lengths, cache)  # (N, C, D), (N,)
        return (self.model.joiner.enc_proj(x).transpose(1, 2), lens, *self.layout.pack(new))


class CacheLayout:
    """fastasr.model.streaming.EncoderCache in sherpa-onnx's three NeMo caches, which it treats as opaque
    zero-initialised tensors, batch first (online-transducer-nemo-model.cc):

    - cache_last_channel (N, L, W + R, 2·D): per layer, the W rotated attention keys and values of the left context
      side by side on the last axis, then R rows holding the subsampling's last input frames (each stride-2
      layer's, flattened and zero-padded to R · 2·D · L numbers);
    - cache_last_time (N, L, D, kernel - 1): the depthwise convolutions' inputs before the chunk;
    - cache_last_channel_len (N,) int64: the encoder frames stepped so far (chunks · C), which gives the key
      positions and how many cached frames exist. Every chunk but a stream's last is whole, so the feature frames
      seen so far are that times the subsampling plus this chunk's feature_lengths.
    """

    def __init__(self, sub_shapes: list[tuple[int, ...]], layers: int, heads: int, window: int, d_model: int,
                 factor: int):
        self.sub_shapes, self.L, self.h, self.W, self.D = sub_shapes, layers, heads, window, d_model
        self.factor = factor
        self.sub_size = sum(math.prod(s) for s in sub_shapes)
        self.R = -(-self.sub_size // (layers * 2 * d_model))  # rows for the subsampling frames

    @classmethod
    def of(cls, stream: StreamingEncoder) -> CacheLayout:
        c = stream.initial_caches(1)
        L, _, h, W, dh = c.keys.shape
        return cls([tuple(t.shape[1:]) for t in c.subsampling], L, h, W, h * dh, stream.factor)

    def shapes(self, kernel_context: int) -> dict[str, list]:
        return {"cache_last_channel": ["N", self.L, self.W + self.R, 2 * self.D],
                "cache_last_time": ["N", self.L, self.D, kernel_context], "cache_last_channel_len": ["N"]}

    def pack(self, c: EncoderCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = c.keys.shape[1]
        kv = torch.cat([c.keys, c.values], -1)  # (L, N, h, W, 2·dh): keys | values per head
        kv = kv.permute(1, 0, 3, 2, 4).reshape(N, self.L, self.W, 2 * self.D)
        sub = torch.cat([t.reshape(N, -1) for t in c.subsampling], 1)  # (N, sub_size)
        sub = F.pad(sub, (0, self.L * self.R * 2 * self.D - self.sub_size)).view(N, self.L, self.R, 2 * self.D)
        return torch.cat([kv, sub], 2), c.conv.transpose(0, 1), c.processed

    def unpack(self, channel: torch.Tensor, time: torch.Tensor, processed: torch.Tensor) -> EncoderCache:
        N, dh = channel.shape[0], self.D // self.h
        kv = channel[:, :, :self.W].reshape(N, self.L, self.W, self.h, 2 * dh).permute(1, 0, 3, 2, 4)
        sub = channel[:, :, self.W:].reshape(N, -1)
        frames, at = [], 0
        for shape in self.sub_shapes:
            n = math.prod(shape)
            frames.append(sub[:, at:at + n].reshape(N, *shape))
            at += n
        return EncoderCache(tuple(frames), kv[..., :dh], kv[..., dh:], time.transpose(0, 1), processed,
                            processed * self.factor)


def streaming_caches(model: Transducer, chunk_frames: int, left_chunks: int) -> dict[str, list]:
    """model.json's streaming.caches: name → axes ("N" for the batch of streams), in the graph's order."""
    stream = StreamingEncoder(model.encoder, chunk_frames, left_chunks)
    return CacheLayout.of(stream).shapes(model.encoder.layers[0].conv.context)


def streaming_inputs(model: Transducer, stream: dict, batch: int, seed: int, chunks: int) -> tuple:
    """Inputs for the chunk step: a mid-stream state (after `chunks` chunks of random features), ragged."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    enc = StreamingEncoder(model.encoder, stream["chunk_frames"], stream["left_chunks"])
    caches = enc.initial_caches(batch)
    F_ = enc.feature_frames
    with torch.no_grad():
        for _ in range(chunks):
            lens = torch.full((batch,), F_, dtype=torch.int64)
            _, _, caches = enc.step(torch.randn(batch, F_, c.n_mels, generator=g), lens, caches)
    lens = torch.linspace(F_, max(1, F_ // 3), batch).round().long()  # a last, partial chunk for some streams
    return (torch.randn(batch, c.n_mels, F_, generator=g), lens, *CacheLayout.of(enc).pack(caches))


def streaming_settings(model: Transducer, checkpoint: Path, chunk_ms: float | None,
                       left_chunks: int | None) -> dict | None:
    """The chunk step to export for a streaming model ({"chunk_frames", "left_chunks", "caches"}), None for
    another model (a UserError if a chunk was asked of it)."""
    c = model.config
    if not c.streaming:
        if chunk_ms is not None or left_chunks is not None:
            raise UserError(f"--chunk-ms/--left-chunks: {checkpoint} is not a streaming model (train one with "
                            "model.streaming=true)")
        return None
    chunk = chunk_frames_of(c, DEFAULT_CHUNK_MS if chunk_ms is None else chunk_ms, checkpoint)
    left = c.left_chunks if left_chunks is None else left_chunks
    if left < 0:
        raise UserError(f"{checkpoint}: model.left_chunks is -1 (all the past), so a stream's attention caches would "
                        "grow without end; export with --left-chunks N (chunks of left context to keep, e.g. "
                        f"{max(1, 2560 // int(chunk * c.subsampling * 10))} for ~2.5 s)")
    return {"chunk_frames": chunk, "left_chunks": left, "caches": streaming_caches(model, chunk, left)}
