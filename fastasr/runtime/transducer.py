"""An exported RNN-T in onnxruntime: NumPy features (log-mel or kaldi fbank, as model.json says) → encoder graph →
batched greedy decoding with the predictor and joiner graphs. No torch anywhere; onnxruntime is imported when a
model is loaded."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from fastasr.audio.files import Transcript, transcribe_files
from fastasr.audio.mel import log_mel
from fastasr.errors import UserError
from fastasr.text.timestamps import word_times
from fastasr.runtime.model_dir import GRAPHS, IO, PRECISIONS, read_model_dir
from fastasr.runtime.stream_spec import STREAMING_GRAPH, streaming_io


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("fastasr.runtime needs onnxruntime: pip install onnxruntime "
                        "(or pip install 'fastasr[export]')") from None
    return onnxruntime


def _session(ort, path: Path, graph: str, options, expect: dict, io: tuple | None = None):
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    load_errors = (ort_errors.InvalidProtobuf, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                   ort_errors.NoSuchFile, ort_errors.Fail)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except load_errors as exc:
        reason = str(exc).split(" : ")[-1].split("failed:")[-1].strip()  # onnxruntime repeats the path
        raise UserError(f"{path}: not a loadable ONNX graph ({reason})") from None
    inputs, outputs = io or IO[graph]
    got = [(a.name, a.shape) for a in (*session.get_inputs(), *session.get_outputs())]
    want = [(name, [a if isinstance(a, int) else expect.get(a, "?") for a in axes])
            for name, axes in (*inputs.items(), *outputs.items())]
    # An output's size the exporter could not infer is a name in the graph (the run gives the size): any size.
    n_in = len(inputs)
    fits = len(got) == len(want) and all(
        g[0] == w[0] and len(g[1]) == len(w[1]) and all(
            b == "?" or a == b or (i >= n_in and isinstance(a, str)) for a, b in zip(g[1], w[1]))
        for i, (g, w) in enumerate(zip(got, want)))
    if not fits:
        raise UserError(f"{path}: the {graph} graph's inputs and outputs are {got}, expected {want} (? = any size)")
    return session


def _feature_function(feature_type: str):
    """(samples, settings) → (T, n_mels) float32 for model.json's features.type."""
    if feature_type == "kaldi_fbank":
        from fastasr.audio.fbank import kaldi_fbank  # NumPy only; imported for the models using it

        return kaldi_fbank
    return log_mel


class OnnxTransducer:
    """The graphs of an export directory, float or int8, in onnxruntime sessions on the CPU.

    `model(pieces)` transcribes 16-kHz pieces conditioned as `model.waveform` says (fastasr.audio.files.WAVEFORMS)
    as one batch, the checkpoint's greedy decoding step for step (fastasr.model.decode.greedy_batch) in graph ids
    (fastasr.runtime.model_dir: the blank last), mapped back to the tokenizer's ids before decoding to text.
    """

    def __init__(self, model_dir: str | os.PathLike, *, precision: str = "float", threads: int = 0):
        if precision not in PRECISIONS:
            raise UserError(f"precision {precision!r}: choose from {list(PRECISIONS)}")
        self.dir = read_model_dir(model_dir)
        ort = _onnxruntime()
        options = ort.SessionOptions()
        # Idle pool threads sleep instead of spinning, as fastasr.commands has torch's OpenMP threads do: on a
        # small or shared CPU the spinning takes the cores the other threads need (benchmarks/RESULTS.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        d = self.dir
        axes = {"n_mels": d.features.n_mels, "J": d.encoder_dim, "L": d.pred_layers, "H": d.pred_hidden,
                "V": d.vocab_size}
        self.sessions = {g: _session(ort, d.graph(g, precision), g, options, axes) for g in GRAPHS}
        self.tokenizer = d.tokenizer
        self.blank = d.blank
        self.waveform = d.waveform
        self._features = _feature_function(d.feature_type)
        # the engine of fastasr.runtime.stream.Stream, for an export of a streaming model
        self.streaming = d.streaming
        self.max_symbols, self.pred_layers, self.pred_hidden = d.max_symbols, d.pred_layers, d.pred_hidden
        self.fbank_settings = d.features
        self.frame_seconds = d.meta["encoder"]["subsampling"] * d.features.hop_length / d.features.sample_rate
        if d.streaming is not None:
            s = d.streaming
            io = streaming_io({name: ["N" if a == -1 else a for a in shape] for name, shape in s.caches.items()})
            axes.update(T_chunk=s.feature_frames, C=s.chunk_frames)
            self.sessions[STREAMING_GRAPH] = _session(ort, d.graph(STREAMING_GRAPH, precision), STREAMING_GRAPH,
                                                      options, axes, io)
            self._stream_outputs = list(io[1])

    def stream(self, sample_rate: int = 16000):
        """A fastasr.runtime.stream.Stream on this export of a streaming model: accept_waveform(samples), text,
        finish()."""
        from fastasr.runtime.stream import Stream

        if self.streaming is None:
            raise UserError(f"{self.dir.path}: an export of a model that does not stream (it reads the whole "
                            "utterance); train one with model.streaming=true and export it")
        return Stream(self, sample_rate)

    def encode_chunk(self, feats: np.ndarray, lens: np.ndarray, caches: dict) -> tuple:
        """One chunk step of the streaming encoder: (N, n_mels, feature_frames) features and how many of them
        exist (N,), the caches (name → array) → (N, J, chunk_frames) encoder output, its lengths, the new caches."""
        out = self.sessions[STREAMING_GRAPH].run(None, {"features": feats, "feature_lengths": lens, **caches})
        return out[0], out[1], dict(zip(caches, out[2:]))

    def features(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, n_mels, T) float32 features, zero past each length, and the lengths (B,) int64."""
        feats = [self._features(p, self.dir.features) for p in pieces]  # each (T_b, n_mels)
        lens = np.array([f.shape[0] for f in feats], dtype=np.int64)
        batch = np.zeros((len(feats), self.dir.features.n_mels, int(lens.max())), dtype=np.float32)
        for b, f in enumerate(feats):
            batch[b, :, :f.shape[0]] = f.T
        return batch, lens

    def encode(self, feats: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, J, T') encoder output and its lengths (B,) int64."""
        return tuple(self.sessions["encoder"].run(None, {"features": feats, "feature_lengths": lens}))

    def predict(self, targets: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        """One label step for graph ids `targets` (B,): the predictor output (B, J, 1) and the new LSTM state."""
        feed = {"targets": targets.astype(np.int32)[:, None], "target_length": np.ones(len(targets), np.int32),
                "h": state[0], "c": state[1]}
        pred, _, h, c = self.sessions["predictor"].run(None, feed)
        return pred, (h, c)  # (B, J, 1), ((L, B, H), (L, B, H))

    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """(B, J, 1) encoder frame + (B, J, 1) predictor output → (B, V) logits over graph ids."""
        return self.sessions["joiner"].run(None, {"encoder_out": enc, "predictor_out": pred})[0]

    def greedy(self, enc: np.ndarray, enc_lens: np.ndarray) -> list[list[int]]:
        """Batched greedy search in graph ids: per frame, emit the best label until blank (at most max_symbols)."""
        return self.greedy_timed(enc, enc_lens)[0]

    def greedy_timed(self, enc: np.ndarray, enc_lens: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
        """greedy's graph ids, and for each the encoder frame that emitted it."""
        B = enc.shape[0]
        zeros = np.zeros((self.dir.pred_layers, B, self.dir.pred_hidden), dtype=np.float32)
        pred, state = self.predict(np.full(B, self.blank), (zeros, zeros))
        hyps: list[list[int]] = [[] for _ in range(B)]
        frames: list[list[int]] = [[] for _ in range(B)]
        for t in range(int(enc_lens.max())):
            frame = np.ascontiguousarray(enc[:, :, t:t + 1])  # (B, J, 1)
            active = t < enc_lens  # (B,)
            for _ in range(self.dir.max_symbols):
                best = self.join(frame, pred).argmax(-1)  # (B,)
                emit = active & (best != self.blank)
                if not emit.any():
                    break
                for b in np.flatnonzero(emit):
                    hyps[b].append(int(best[b]))
                    frames[b].append(t)
                new_pred, new_state = self.predict(best, state)
                pred = np.where(emit[:, None, None], new_pred, pred)
                state = tuple(np.where(emit[None, :, None], n, o) for n, o in zip(new_state, state))
                active = emit  # utterances that emitted blank move on to the next frame
        return hyps, frames

    def token_ids(self, graph_ids: list[int]) -> list[int]:
        """Graph ids → the tokenizer's ids (model.json decoding.tokenizer_id_offset)."""
        return [(s + self.dir.tokenizer_id_offset) % self.dir.vocab_size for s in graph_ids]

    timestamps = False  # __call__ returns texts; (text, words) with timestamps=True (fastasr.audio.files)

    def __call__(self, pieces: list[np.ndarray]) -> list:
        enc, enc_lens = self.encode(*self.features(pieces))
        hyps, frames = self.greedy_timed(enc, enc_lens)
        texts = [self.tokenizer.decode(self.token_ids(ids)) for ids in hyps]
        if not self.timestamps:
            return texts
        return [(text, word_times(self.tokenizer, self.token_ids(ids), [f * self.frame_seconds for f in fr],
                                  self.frame_seconds)) for text, ids, fr in zip(texts, hyps, frames)]


def iter_transcripts(model_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], *,
                     precision: str = "float", threads: int = 0, batch_seconds: float = 240.0,
                     max_piece_seconds: float = 30.0, on_error: str = "raise",
                     progress: bool = False, timestamps: bool = False) -> Iterator[Transcript]:
    """A Transcript for each file, in the order given: the same reading, cutting, batching and order as
    fastasr.inference.transcribe.iter_transcripts, with the exported graphs instead of the checkpoint;
    timestamps: each word's times too (Transcript.words)."""
    model = OnnxTransducer(model_dir, precision=precision, threads=threads)
    model.timestamps = timestamps
    return transcribe_files(paths, model, batch_seconds=batch_seconds, max_piece_seconds=max_piece_seconds,
                            waveform=model.waveform, preemphasis=model.dir.preemphasis, on_error=on_error,
                            progress=progress)


def transcribe(model_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], *, precision: str = "float",
               threads: int = 0, batch_seconds: float = 240.0,
               max_piece_seconds: float = 30.0) -> list[tuple[str, str]]:
    """(path, text) for each file, in the order given; an unreadable file raises UnreadableAudio naming it."""
    return [(t.path, t.text) for t in iter_transcripts(model_dir, paths, precision=precision, threads=threads,
                                                        batch_seconds=batch_seconds,
                                                        max_piece_seconds=max_piece_seconds)]
