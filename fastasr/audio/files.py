"""Audio files → transcripts with any recogniser: the part of transcription that knows nothing of the model.

soundfile decode → mono (channel mean) → soxr to 16 kHz → cut long recordings at quiet points → the loader's
Numba peak-normalise + pre-emphasis per piece (or the raw waveform, for the kaldi front end: WAVEFORMS) → `recognise(pieces) -> texts` (the checkpoint's torch model in
fastasr.inference.transcribe, the ONNX graphs in fastasr.runtime) → one Transcript per file, in input order.

Any rate from 1 to 192 kHz (fastasr.audio.SAMPLE_RATES; a header claiming another is an unreadable file), any
channel count, opus / wav / flac, any length, decoded and resampled a block at a time (memory follows the 16-kHz
result, 230 MB an hour, not the file). Files are read a window at a time (input order); inside a window the
pieces are sorted by length and batched under a padded-seconds budget, so short and long files do not pad each
other; results come out in input order, window by window. A recording longer than
`max_piece_seconds` is cut into pieces no longer than that (the model saw utterances of up to ~30 s in training,
and attention memory grows with the square of the length), each cut at the quietest 20 ms in the last third of
the piece; the pieces' texts are joined with a space.

Torch-free: the ONNX runtime and the training loader's decode stage both build on this module.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from fastasr.audio import SAMPLE_RATES
from fastasr.kernels import normalize_preemphasize

SAMPLE_RATE = 16000
PREEMPHASIS = 0.97
QUIET_FRAME = SAMPLE_RATE // 50  # 20 ms: the unit in which a quiet cut point is searched
WINDOW_FILES = 256  # files read ahead (and held) at most …
WINDOW_SECONDS = 3600.0  # … or this much audio, whichever comes first
READ_BLOCK_SAMPLES = 1 << 20  # samples (frames × channels) decoded at a time: 4 MB of float32

# How a model wants its 16-kHz mono waveform before its features (fastasr.model.transducer.waveform_of):
# "peak_preemphasis": peak-normalised, then pre-emphasised (the log-mel front end's; the loader's Numba kernel);
# "raw": as decoded (the kaldi front end pre-emphasises each frame itself, as kaldi-native-fbank does in
# sherpa-onnx, which feeds samples as they are).
WAVEFORMS = ("peak_preemphasis", "raw")

Recognise = Callable[[list[np.ndarray]], list[str]]  # normalised 16-kHz pieces → their texts, in order


class UnreadableAudio(ValueError):
    """A file that cannot be transcribed: missing, undecodable, or without audio."""


class Transcript(NamedTuple):
    path: str
    text: str | None  # None when the file could not be read
    error: str | None = None  # why not
    words: list[tuple[str, float, float]] | None = None  # (word, start s, end s) when timestamps were asked for


def mono_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """(S, C) float32 as soundfile reads it → float32 mono (channel mean) at 16 kHz (soxr)."""
    x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if sr != SAMPLE_RATE and x.size:
        x = soxr.resample(x, sr, SAMPLE_RATE)
    return x


def read_mono(path: str | os.PathLike) -> np.ndarray:
    """Mono float32 at 16 kHz, as decoded (not normalised): what `mono_16k` makes of the whole file, decoded and
    resampled a block at a time (READ_BLOCK_SAMPLES), so that memory follows the 16-kHz result, not the file's
    rate or channel count. A rate outside SAMPLE_RATES is refused before anything is decoded."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UnreadableAudio(f"{path}: not a regular file")
    except FileNotFoundError:
        raise UnreadableAudio(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableAudio(f"{path}: {exc.strerror}") from None
    try:
        with sf.SoundFile(str(path)) as f:
            lo, hi = SAMPLE_RATES
            if not lo <= f.samplerate <= hi:
                raise UnreadableAudio(f"{path}: sample rate {f.samplerate} Hz, outside {lo}-{hi} Hz")
            mono = _decode_mono_16k(f)
    except UnreadableAudio:
        raise
    except Exception as exc:  # libsndfile's errors carry no useful type
        raise UnreadableAudio(f"{path}: {exc}") from None
    if mono.size < 2:
        raise UnreadableAudio(f"{path}: no audio ({mono.size} samples at {SAMPLE_RATE} Hz)")
    if not np.isfinite(mono).all():
        raise UnreadableAudio(f"{path}: non-finite samples")
    return mono


def _decode_mono_16k(f: sf.SoundFile) -> np.ndarray:
    """mono_16k of the whole of `f`, holding one block of the decoded file at a time; soxr's stream resampler gives
    the one-shot resampler's samples exactly."""
    block = max(1, READ_BLOCK_SAMPLES // f.channels)
    stream = soxr.ResampleStream(f.samplerate, SAMPLE_RATE, 1, dtype="float32") if f.samplerate != SAMPLE_RATE \
        else None
    out = []
    while True:
        x = f.read(block, dtype="float32", always_2d=True)  # (S, C)
        last = len(x) < block
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
        out.append(x if stream is None else stream.resample_chunk(x, last=last))
        if last:
            return np.concatenate(out)


def condition(x: np.ndarray, waveform: str = "peak_preemphasis", preemphasis: float = PREEMPHASIS) -> np.ndarray:
    """A decoded 16-kHz mono waveform as a model with this `waveform` (WAVEFORMS) is fed it, float32; ValueError
    for NaN or infinite samples (both ways: the kernel checks in its own pass)."""
    if waveform == "peak_preemphasis":
        return normalize_preemphasize(x, preemphasis)
    if waveform != "raw":
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("input must be finite (it holds NaN or inf)")
    return x


def read_audio(path: str | os.PathLike, waveform: str = "peak_preemphasis") -> np.ndarray:
    """Mono float32 at 16 kHz, conditioned exactly as the training loader does it for that `waveform`."""
    return condition(read_mono(path), waveform)


def split_long(x: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Consecutive pieces of x (views, together exactly x), none longer than max_samples; each cut falls at the
    start of the quietest 20-ms frame in the last third of the piece it ends."""
    if max_samples < 3 * QUIET_FRAME:
        raise ValueError(f"pieces must hold at least {3 * QUIET_FRAME} samples, got {max_samples}")
    pieces = []
    start = 0
    while x.size - start > max_samples:
        lo = start + max_samples - max_samples // 3
        n = (start + max_samples - lo) // QUIET_FRAME
        frames = x[lo:lo + n * QUIET_FRAME].reshape(n, QUIET_FRAME)
        quietest = int(np.argmin(np.einsum("ij,ij->i", frames, frames)))
        cut = lo + quietest * QUIET_FRAME
        pieces.append(x[start:cut])
        start = cut
    pieces.append(x[start:])
    return pieces


@dataclass
class _Piece:
    file: int  # index in the window
    part: int  # position in its file
    audio: np.ndarray  # normalised + pre-emphasised, as in training
    start: float = 0.0  # seconds into its file


def _windows(paths: list[str]) -> Iterator[list[tuple[str, np.ndarray | UnreadableAudio]]]:
    """The files in input order, decoded, a window at a time (a file that fails carries its error instead)."""
    window, seconds = [], 0.0
    for path in paths:
        try:
            audio = read_mono(path)
            seconds += audio.size / SAMPLE_RATE
        except UnreadableAudio as exc:
            audio = exc
        window.append((path, audio))
        if len(window) >= WINDOW_FILES or seconds >= WINDOW_SECONDS:
            yield window
            window, seconds = [], 0.0
    if window:
        yield window


def _batches(pieces: list[_Piece], batch_seconds: float) -> Iterator[list[_Piece]]:
    """Pieces sorted by length, cut into batches whose padded length × size stays within batch_seconds."""
    budget = batch_seconds * SAMPLE_RATE
    batch: list[_Piece] = []
    for piece in sorted(pieces, key=lambda p: p.audio.size):
        if batch and (len(batch) + 1) * piece.audio.size > budget:
            yield batch
            batch = []
        batch.append(piece)
    if batch:
        yield batch


def transcribe_files(paths: Iterable[str | os.PathLike], recognise: Recognise, *, batch_seconds: float = 240.0,
                     max_piece_seconds: float = 30.0, preemphasis: float = PREEMPHASIS, on_error: str = "raise",
                     progress: bool = False, waveform: str = "peak_preemphasis") -> Iterator[Transcript]:
    """A Transcript for each file, in the order given; `recognise` sees length-sorted batches of pieces.

    on_error="raise": an unreadable file raises UnreadableAudio naming it. on_error="skip": it is yielded as
    Transcript(path, None, why) and the rest goes on. waveform: how each piece is conditioned (WAVEFORMS;
    `preemphasis` is the coefficient of "peak_preemphasis"). A recogniser whose `timestamps` attribute is true
    returns (text, words) per piece, each word (word, start, end) in seconds into the piece: the Transcripts then
    carry the words in seconds into their file.
    """
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be > 0, got {batch_seconds}")
    paths = [str(p) for p in paths]
    max_samples = int(max_piece_seconds * SAMPLE_RATE)
    timed = bool(getattr(recognise, "timestamps", False))

    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="file", disable=not progress, dynamic_ncols=True)
    for window in _windows(paths):
        pieces = []
        for i, (path, audio) in enumerate(window):
            if isinstance(audio, UnreadableAudio):
                if on_error == "raise":
                    raise audio
                continue
            start = 0
            for k, p in enumerate(split_long(audio, max_samples)):
                pieces.append(_Piece(i, k, condition(p, waveform, preemphasis), start / SAMPLE_RATE))
                start += p.size
        texts: dict[int, dict[int, tuple]] = {}  # file → {part: (text, words in the file's seconds)}
        for batch in _batches(pieces, batch_seconds):
            for p, out in zip(batch, recognise([p.audio for p in batch]), strict=True):
                text, words = out if timed else (out, None)
                if words is not None:
                    words = [(w, round(a + p.start, 3), round(b + p.start, 3)) for w, a, b in words]
                texts.setdefault(p.file, {})[p.part] = (text, words)
        for i, (path, audio) in enumerate(window):
            bar.update(1)
            if isinstance(audio, UnreadableAudio):
                yield Transcript(path, None, str(audio))
                continue
            parts = [texts[i][k] for k in range(len(texts[i]))]
            words = [w for _, ws in parts for w in ws] if timed else None
            yield Transcript(path, " ".join(t for t, _ in parts if t), None, words)
    bar.close()
