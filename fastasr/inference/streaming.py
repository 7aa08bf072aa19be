"""A checkpoint as the engine of a stream (fastasr.runtime.stream.Stream): the same chunk-by-chunk transcription as
an export's, with the model's own StreamingEncoder.step in torch, so `fastasr transcribe --stream --checkpoint`
needs no export. It speaks the export's graph ids (the blank last), so one decoding loop serves both."""

from __future__ import annotations

import os

import numpy as np
import torch

from fastasr.errors import UserError
from fastasr.inference.stream_graph import DEFAULT_CHUNK_MS, CacheLayout, streaming_settings
from fastasr.model.checkpoint import load_model
from fastasr.model.decode import MAX_SYMBOLS
from fastasr.model.streaming import StreamingEncoder
from fastasr.model.transducer import log_mel
from fastasr.runtime.model_dir import TOKENIZER_ID_OFFSET
from fastasr.runtime.stream_spec import STREAMING_INT_CACHES, StreamingSpec

__all__ = ["CheckpointStreamEngine"]


class CheckpointStreamEngine:
    """A streaming checkpoint's chunk step and greedy pieces for Stream, on the CPU, at `chunk_ms` (default
    DEFAULT_CHUNK_MS) and `left_chunks` (default model.left_chunks)."""

    def __init__(self, checkpoint: str | os.PathLike, *, chunk_ms: float | None = None,
                 left_chunks: int | None = None, threads: int = 0):
        if not os.path.isfile(checkpoint):
            raise UserError(f"{checkpoint}: no such checkpoint (expected a file written by `fastasr train`)")
        if threads > 0:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, c = load_model(checkpoint, torch.device("cpu"))
        self.model.eval()
        if not c.streaming:
            raise UserError(f"--stream: {checkpoint} is not a streaming model (train one with model.streaming=true); "
                            "it reads the whole utterance")
        stream = streaming_settings(self.model, checkpoint, DEFAULT_CHUNK_MS if chunk_ms is None else chunk_ms,
                                    left_chunks)
        self.encoder = StreamingEncoder(self.model.encoder, stream["chunk_frames"], stream["left_chunks"])
        caches = {name: [-1 if a == "N" else a for a in axes] for name, axes in stream["caches"].items()}
        self.streaming = StreamingSpec(stream["chunk_frames"], stream["left_chunks"], self.encoder.feature_frames,
                                       caches, STREAMING_INT_CACHES)
        self.layout = CacheLayout.of(self.encoder)
        self.fbank_settings = log_mel(c).fbank  # a streaming model's front end is the kaldi fbank (training.config)
        self.frame_seconds = c.subsampling * self.fbank_settings.hop_length / self.fbank_settings.sample_rate
        self.vocab = c.vocab_size
        self.blank = (self.model.blank - TOKENIZER_ID_OFFSET) % self.vocab
        self.max_symbols, self.pred_layers, self.pred_hidden = MAX_SYMBOLS, c.pred_layers, c.pred_hidden

    def token_ids(self, graph_ids: list[int]) -> list[int]:
        return [(s + TOKENIZER_ID_OFFSET) % self.vocab for s in graph_ids]

    @torch.no_grad()
    def encode_chunk(self, feats: np.ndarray, lens: np.ndarray, caches: dict) -> tuple:
        cache = self.layout.unpack(*(torch.from_numpy(a) for a in caches.values()))
        x, n, new = self.encoder.step(torch.from_numpy(feats).transpose(1, 2), torch.from_numpy(lens), cache)
        enc = self.model.joiner.enc_proj(x).transpose(1, 2)  # (N, J, C)
        return enc.numpy(), n.numpy(), {name: a.numpy() for name, a in zip(caches, self.layout.pack(new))}

    @torch.no_grad()
    def predict(self, targets: np.ndarray, state) -> tuple:
        tokens = torch.remainder(torch.from_numpy(targets).long() + TOKENIZER_ID_OFFSET, self.vocab)[:, None]
        out, (h, c) = self.model.predict(tokens, tuple(torch.from_numpy(s) for s in state))
        return out.transpose(1, 2).numpy(), (h.numpy(), c.numpy())  # (N, J, 1)

    @torch.no_grad()
    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        logits = self.model.joiner(torch.from_numpy(enc)[:, :, 0], torch.from_numpy(pred)[:, :, 0])
        k = TOKENIZER_ID_OFFSET
        return torch.cat([logits[:, k:], logits[:, :k]], dim=1).numpy()

    def stream(self, sample_rate: int = 16000):
        from fastasr.runtime.stream import Stream

        return Stream(self, sample_rate)
