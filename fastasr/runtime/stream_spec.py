"""A streaming model's part of an export directory: the streaming encoder graph's name, inputs and outputs, and
model.json's `streaming` section read and validated (fastasr.runtime.model_dir reads the rest)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fastasr.errors import UserError
from fastasr.runtime.fields import field, inside, number

# A streaming model's export adds the encoder as one chunk step with its caches as inputs and outputs
# (fastasr.model.streaming.StreamingEncoder.step at the exported chunk size and left context, all shapes static
# but the batch of streams N), in the calling convention of sherpa-onnx's online NeMo transducers
# (online-transducer-nemo-model.cc: inputs and outputs by position, caches opaque, zeros at a stream's start):
#     DIR/streaming_encoder.onnx  features (N, n_mels, chunk feature frames), feature_lengths (N,) i64: the frames
#                                 of the chunk that exist (fewer only in a stream's last chunk), cache_last_channel,
#                                 cache_last_time (f32), cache_last_channel_len (N,) i64
#                                 → encoder_out (N, J, chunk frames), encoder_out_lengths (N,) i64, the three
#                                 caches for the next chunk (each input's name + "_next")
# What the caches hold is fastasr.inference.export.CacheLayout's; their shapes are in model.json's
# streaming.caches with "N" for the batch.
STREAMING_GRAPH = "streaming_encoder"
STREAMING_CACHES = ("cache_last_channel", "cache_last_time", "cache_last_channel_len")
STREAMING_INT_CACHES = ("cache_last_channel_len",)
MAX_CACHE_ELEMENTS = 1 << 28  # per stream and cache: 1 GB of float32, far above a real model's (tiny: 40 K)


def streaming_io(cache_shapes: dict[str, list]) -> tuple[dict, dict]:
    """The streaming encoder's (inputs, outputs), name → axes, for model.json's streaming.caches."""
    caches = dict(cache_shapes)
    inputs = {"features": ["N", "n_mels", "T_chunk"], "feature_lengths": ["N"], **caches}
    outputs = {"encoder_out": ["N", "J", "C"], "encoder_out_lengths": ["N"],
               **{f"{name}_next": axes for name, axes in caches.items()}}
    return inputs, outputs


@dataclass(frozen=True)
class StreamingSpec:
    """model.json's streaming section, validated."""

    chunk_frames: int  # encoder frames per chunk step
    left_chunks: int  # chunks of left context the attention keeps
    feature_frames: int  # feature frames per chunk step: chunk_frames · subsampling
    caches: dict  # name → shape with -1 for the batch, in the graph's input order after the features
    int_caches: tuple[str, ...]  # the int64 ones

    def initial_caches(self, batch: int) -> dict:
        """Zeros of every cache for `batch` streams: the state before a stream's first chunk."""
        import numpy as np

        return {name: np.zeros([batch if a == -1 else a for a in shape],
                               np.int64 if name in self.int_caches else np.float32)
                for name, shape in self.caches.items()}


def read_streaming(meta: dict, meta_path: Path, path: Path, feature_type: str, features) -> StreamingSpec | None:
    """model.json's streaming section (None when absent or null): sizes in range, the caches' names and shapes
    those of fastasr.model.streaming's step, a front end that needs no whole-utterance statistics."""
    section = meta.get("streaming")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise UserError(f"{meta_path}: field 'streaming' is {section!r}, expected an object or null")
    sizes = {}
    for key, low in (("chunk_frames", 1), ("left_chunks", 0), ("feature_frames", 1)):
        value = field(meta, f"streaming.{key}", int, meta_path)
        if not low <= value <= 4096:
            raise UserError(f"{meta_path}: field 'streaming.{key}' is {value!r}, expected an integer in {low}..4096")
        sizes[key] = value
    if sizes["feature_frames"] != sizes["chunk_frames"] * number(meta, "encoder.subsampling", meta_path):
        raise UserError(f"{meta_path}: streaming.feature_frames is not chunk_frames × encoder.subsampling")
    if feature_type != "kaldi_fbank" or features.normalize:
        raise UserError(f"{meta_path}: a streaming export needs the kaldi fbank without per-utterance "
                        "normalisation (features.type kaldi_fbank, normalize false)")
    caches = field(meta, "streaming.caches", dict, meta_path)
    if list(caches) != list(STREAMING_CACHES):
        raise UserError(f"{meta_path}: streaming.caches are {list(caches)}, expected {list(STREAMING_CACHES)}")
    shapes = {}
    for name, axes in caches.items():
        if not (isinstance(axes, list) and axes.count("N") == 1 and all(
                a == "N" or (isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= MAX_CACHE_ELEMENTS)
                for a in axes)):
            raise UserError(f"{meta_path}: streaming.caches.{name} is {axes!r}, expected sizes with one 'N'")
        if math.prod(a for a in axes if a != "N") > MAX_CACHE_ELEMENTS:
            raise UserError(f"{meta_path}: streaming.caches.{name} {axes} holds more than {MAX_CACHE_ELEMENTS} "
                            "numbers per stream")
        shapes[name] = [-1 if a == "N" else a for a in axes]
    graphs = field(meta, "streaming.graphs", dict, meta_path)
    if set(graphs) != set(meta["graphs"]):
        raise UserError(f"{meta_path}: streaming.graphs must name a file for each precision of 'graphs'")
    for precision, name in graphs.items():
        inside(path, name, f"streaming.graphs.{precision}", meta_path)
    return StreamingSpec(sizes["chunk_frames"], sizes["left_chunks"], sizes["feature_frames"], shapes,
                         STREAMING_INT_CACHES)
