"""A stream: one utterance transcribed while its audio arrives, with a streaming model's chunk step.

`Stream(engine)` takes samples as they come (`accept_waveform`), computes the kaldi fbank frame by frame
(fastasr.audio.fbank_stream.FbankStream: a frame as soon as its window is in), runs the encoder's chunk step each
time a chunk of feature frames is complete, with the caches of everything before it, and decodes the new encoder
frames greedily with the predictor state carried over from the chunk before. `text` is the partial result at any
time; `finish()` flushes the last frames (mirrored at the end, as the whole-signal front end does), runs the last,
shorter chunk and returns the final text with each token's and word's emission time.

Fed an utterance in any pieces, the final text is the greedy text of the chunk-masked whole-utterance forward at the
same chunk size and left context ("simulated streaming", `fastasr eval --chunk-ms`): the front end, the chunk step
and the decoding each equal their whole-utterance counterparts (tests/runtime/test_stream.py).

The engine is either an export (fastasr.runtime.OnnxTransducer, no torch) or a checkpoint
(fastasr.inference.streaming.CheckpointStreamEngine); both speak graph ids, the blank last (fastasr.runtime.model_dir).
An engine has: `streaming` (a model_dir.StreamingSpec), `fbank_settings`, `frame_seconds` (seconds per encoder frame),
`blank`, `max_symbols`, `pred_layers`, `pred_hidden`, `tokenizer`, `token_ids(graph_ids)`,
`encode_chunk(features (N, n_mels, feature_frames), lengths (N,), caches) → (encoder_out (N, J, C), lengths (N,),
caches)`, `predict(targets (N,), (h, c)) → (predictor_out (N, J, 1), (h, c))` and `join(enc, pred) → logits (N, V)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastasr.audio.fbank_stream import FbankStream
from fastasr.text.timestamps import word_times

SAMPLE_RATE = 16000

__all__ = ["Stream", "StreamResult"]


@dataclass
class StreamResult:
    """A finished stream: its text, each emitted token (tokenizer ids) with the time of the encoder frame that
    emitted it (seconds from the stream's start), and each word with the times of its first and last token."""

    text: str
    tokens: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    words: list[tuple[str, float, float]] = field(default_factory=list)


class Stream:
    """One utterance as it arrives. Not thread-safe; one object per stream."""

    def __init__(self, engine, sample_rate: int = SAMPLE_RATE):
        spec = engine.streaming
        if spec is None:
            raise ValueError("the model does not stream (it reads the whole utterance): train it with "
                             "model.streaming=true and export it")
        self.engine, self.spec = engine, spec
        self.fbank = FbankStream(engine.fbank_settings)
        self.caches = spec.initial_caches(1)
        self.pending = np.zeros((0, engine.fbank_settings.n_mels), np.float32)
        zeros = np.zeros((engine.pred_layers, 1, engine.pred_hidden), np.float32)
        self.pred, self.state = engine.predict(np.array([engine.blank]), (zeros, zeros))
        self.ids: list[int] = []  # graph ids emitted so far
        self.frames: list[int] = []  # the encoder frame of each
        self.decoded = 0  # encoder frames decoded so far
        self.resampler = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
        self.finished = False

    def accept_waveform(self, samples: np.ndarray) -> None:
        """The next samples, 1-D mono in [-1, 1] at the stream's sample rate."""
        if self.finished:
            raise ValueError("the stream is finished: start a new one")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"samples must be 1-D mono, got shape {x.shape}")
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x, last=False)
        self._frames(self.fbank.accept(x), last=False)

    @property
    def text(self) -> str:
        """The partial result: what has been decoded so far."""
        return self.engine.tokenizer.decode(self.engine.token_ids(self.ids))

    def finish(self) -> StreamResult:
        """End of the audio: the last frames and chunk, and the final result."""
        if self.finished:
            raise ValueError("the stream is finished already")
        if self.resampler is not None:
            self._frames(self.fbank.accept(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)),
                         last=False)
        self.finished = True
        self._frames(self.fbank.finish(), last=True)
        tokens = self.engine.token_ids(self.ids)
        times = [round(f * self.engine.frame_seconds, 3) for f in self.frames]
        return StreamResult(self.text, tokens, times, word_times(self.engine.tokenizer, tokens, times,
                                                                 self.engine.frame_seconds))

    def _frames(self, frames: np.ndarray, last: bool) -> None:
        if frames.size:
            self.pending = np.concatenate([self.pending, frames])
        F = self.spec.feature_frames
        while self.pending.shape[0] >= F:
            self._chunk(self.pending[:F])
            self.pending = self.pending[F:]
        if last and self.pending.shape[0]:
            self._chunk(self.pending)
            self.pending = self.pending[:0]

    def _chunk(self, feats: np.ndarray) -> None:
        """One chunk step: feats (n <= feature_frames, n_mels), zero-padded to a whole chunk."""
        x = np.zeros((1, feats.shape[1], self.spec.feature_frames), np.float32)
        x[0, :, :feats.shape[0]] = feats.T
        enc, lens, self.caches = self.engine.encode_chunk(x, np.array([feats.shape[0]], np.int64), self.caches)
        self._decode(enc, int(lens[0]))

    def _decode(self, enc: np.ndarray, count: int) -> None:
        """Greedy search over the chunk's `count` encoder frames, as fastasr.model.decode.greedy_batch does over a
        whole utterance: per frame, the best label until blank, at most max_symbols."""
        e = self.engine
        for t in range(count):
            frame = np.ascontiguousarray(enc[:, :, t:t + 1])  # (1, J, 1)
            for _ in range(e.max_symbols):
                best = int(e.join(frame, self.pred).argmax(-1)[0])
                if best == e.blank:
                    break
                self.ids.append(best)
                self.frames.append(self.decoded + t)
                self.pred, self.state = e.predict(np.array([best]), self.state)
        self.decoded += count
