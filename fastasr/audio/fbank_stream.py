"""The kaldi front end frame by frame, as audio arrives: what a streaming model's features are.

A streaming model cannot normalise per utterance (the mean and variance need the whole of it), so its kaldi
front end has `normalize=False` (sherpa-onnx's normalize_type "NA"), and then every frame depends only on its own
samples. Frame f reads samples ``f * hop + hop // 2 - win // 2`` … ``+ win - 1`` (fastasr.audio.fbank): a frame
whose window lies inside the samples received so far is final and is emitted at once; the frames whose window
reaches past the end of the signal (mirrored there, snip_edges=false) only when the stream is finished. The frames
of a whole stream are those of `kaldi_fbank` on all its samples, whatever the chunking (tests/audio/test_fbank_stream.py).

State is explicit, in the FbankStream object: the samples not yet behind every future frame, how many came before
them, and how many frames are out. Memory is one window plus one chunk.
"""

from __future__ import annotations

import numpy as np

from fastasr.audio.fbank import FbankSettings, frame_features, frame_layout, num_frames, reflect_index

__all__ = ["FbankStream"]


class FbankStream:
    """`accept(samples) -> new frames` as samples arrive, `finish() -> the last frames` at the end of the stream;
    each (T, n_mels) float32."""

    def __init__(self, settings: FbankSettings):
        if settings.normalize:
            raise ValueError("a stream cannot be normalised per utterance (its statistics need the whole of it): "
                             "use settings with normalize=False")
        self.s = settings
        self.buffer = np.zeros(0, np.float64)  # samples from absolute index `offset` on
        self.offset = 0  # samples dropped before the buffer
        self.frames = 0  # frames emitted so far
        self.done = False
        _, _, self.first = frame_layout(settings.win_length, settings.hop_length)

    @property
    def received(self) -> int:
        return self.offset + self.buffer.size

    def _start(self, f: np.ndarray) -> np.ndarray:
        """Where frames f begin in the signal (negative for the first ones, which read mirrored samples)."""
        return f * self.s.hop_length + self.s.hop_length // 2 - self.s.win_length // 2

    def _features(self, f: np.ndarray, n: int | None) -> np.ndarray:
        """Frames f from the buffer; n: the signal's length when it is known (mirroring at its end), else None
        (only the start can be mirrored, by a frame that lies inside the samples received)."""
        idx = self._start(f)[:, None] + np.arange(self.s.win_length)[None, :]  # (T, win) absolute indices
        idx = reflect_index(idx, n if n is not None else max(self.received, 1))
        return frame_features(self.buffer[idx - self.offset], self.s).astype(np.float32)

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """Take the next samples (1-D, in [-1, 1]); the frames that became final."""
        if self.done:
            raise ValueError("the stream is finished: start a new FbankStream")
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {x.shape}")
        self.buffer = np.concatenate([self.buffer, x])
        s = self.s
        # frame f is final once its window ends inside what was received: start + win <= received
        last = (self.received - s.win_length - self._start(np.int64(0))) // s.hop_length  # the last final frame
        ready = np.arange(self.frames, max(self.frames, int(last) + 1))
        if self.received < s.win_length // 2:  # the first frame's mirror still needs samples that have not come
            ready = ready[:0]
        out = self._features(ready, None) if ready.size else np.zeros((0, s.n_mels), np.float32)
        self.frames += ready.size
        keep_from = max(0, int(self._start(np.int64(self.frames))))  # no later frame reads before its start
        if self.frames > 0 and keep_from > self.offset:  # (before frame 0 is out, all is kept for its mirror)
            self.buffer = self.buffer[keep_from - self.offset:]
            self.offset = keep_from
        return out

    def finish(self) -> np.ndarray:
        """The frames whose windows reach past the end, now that the end is known; the stream is then done."""
        if self.done:
            raise ValueError("the stream is finished already")
        self.done = True
        n = self.received
        rest = np.arange(self.frames, num_frames(n, self.s.hop_length))
        if not rest.size:
            return np.zeros((0, self.s.n_mels), np.float32)
        self.frames += rest.size
        return self._features(rest, n)
