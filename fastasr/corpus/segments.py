"""Segments — a span of a recording (NeMo `offset`/`duration`, Lhotse supervisions, Kaldi `segments`) stored as a
sample of its own.

How a segment is stored. Its audio member holds exactly the span, decoded and re-stored without loss relative to
what the loader decodes (soundfile, float32): the stored member decodes to bit for bit the float32 samples that the
original file decodes to over the span.
- Integer sources up to 16 bits (PCM_16, PCM_S8/U8, µ-law, A-law, ADPCM, GSM, ALAC 16) → `KEY.flac`, FLAC PCM_16;
- 24-bit sources (PCM_24, ALAC 24) → `KEY.flac`, FLAC PCM_24;
- everything else (Opus, Vorbis, MP3, PCM_32, float) → `KEY.wav`, WAV FLOAT (32-bit) of the float32 decode: no
  integer format holds a lossy codec's float output exactly, and 16-bit FLAC of a loud Opus file would clip.
- A span that is the whole file, all channels, of a .opus / .wav / .flac keeps the file's own bytes (verified as
  any whole file is). A whole file of another kind libsndfile reads (.mp3, .ogg, .aiff) is stored as above.
Not the original bytes plus a span: a one-hour recording cut into 1,000 segments would be stored 1,000 times and
decoded from its start by every reader. The cost of re-storing: a span of an Opus file becomes ~4-10x larger.

Sample positions: start = round(offset · rate), end = round((offset + duration) · rate) of the file's own rate.
The span must lie in the file: a start at or past its end, or an end more than END_TOLERANCE past it, is rejected
as `segment_out_of_range` (an end within the tolerance — a rounded manifest duration — is cut at the file's end);
so is a channel the file does not have. Two segments of one file (and channel) that share more than
OVERLAP_TOLERANCE are both rejected as `segment_overlap`: the shared speech would be in one sample's audio and in
the other's transcript, a wrong sample either way. KEY.json of a segment adds `offset` (start / rate, seconds).
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from fastasr.corpus.rows import AUDIO_EXTENSIONS, Row
from fastasr.corpus.verify import (AudioInfo, AudioLimits, AudioRejected, check_duration, check_rate, open_sound,
                                   verify_file)

OVERLAP_TOLERANCE = 0.010  # s: a frame hop; less cannot hold a word
END_TOLERANCE = 0.010  # s
_INT16 = {"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM", "GSM610", "ALAC_16", "DPCM_8",
          "DPCM_16", "DWVW_16"}
_INT24 = {"PCM_24", "ALAC_24", "DWVW_24"}


@dataclass(frozen=True)
class SpanAudio:
    data: bytes  # the audio member
    ext: str  # its extension: flac | wav | the original's
    info: AudioInfo  # of the stored audio
    offset: float | None  # start in the recording, s (None: the whole original file)


def overlapping(rows: list[Row], indices: list[int]) -> dict[int, str]:
    """{index: detail} of every segment among rows[indices] sharing more than OVERLAP_TOLERANCE with another
    segment of the same file and channel. Whole-file rows are not segments and overlap nothing."""
    by_file: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        if rows[i].is_segment:
            by_file[(rows[i].audio, rows[i].channel)].append(i)
    out: dict[int, str] = {}
    for items in by_file.values():
        items.sort(key=lambda i: (rows[i].offset, rows[i].end, rows[i].key))
        reach = None  # the segment seen so far that ends last: anything starting before its end overlaps it
        for i in items:
            if reach is not None and rows[i].offset < rows[reach].end - OVERLAP_TOLERANCE:
                out.setdefault(i, f"overlaps {rows[reach].label}")
                out.setdefault(reach, f"overlaps {rows[i].label}")
            if reach is None or rows[i].end > rows[reach].end:
                reach = i
    return out


def needs_cut(row: Row) -> bool:
    """Segments, and whole files whose container a shard does not hold (.mp3, .ogg, …)."""
    return row.is_segment or os.path.splitext(row.audio or "")[1].lower() not in AUDIO_EXTENSIONS


def cut_span(row: Row, fd: int, size: int, verify_mode: str = "full", limits: AudioLimits = AudioLimits()
             ) -> SpanAudio:
    """The stored audio of `row`'s span, from its audio file open as `fd` (`size` bytes); raises AudioRejected
    (audio_empty / audio_undecodable / audio_too_large / sample_rate_out_of_range / segment_out_of_range /
    duration_too_short / duration_too_long) when there is none. The span's length and decoded size are checked
    against `limits` on the header, before anything is decoded."""
    if size == 0:
        raise AudioRejected("audio_empty", "0 bytes")
    ext = os.path.splitext(row.audio)[1].lower()
    os.lseek(fd, 0, os.SEEK_SET)
    with open_sound(fd) as f:
        check_rate(f.samplerate)
        start, end, channel = _frames(row, f.samplerate, f.frames, f.channels)
        if not (start == 0 and end == f.frames and channel is None and ext in AUDIO_EXTENSIONS):
            check_duration(end - start, f.samplerate, limits)
            decoded = (end - start) * f.channels * (2 if f.subtype in _INT16 else 4)
            if decoded > limits.max_bytes:
                raise AudioRejected("audio_too_large", f"the span decodes to {decoded} bytes, over the "
                                                       f"{limits.max_bytes:.0f} of {limits.max_duration:g} s")
            return _store(_read(f, start, end, channel, row), f.samplerate, start)
    data, info = verify_file(fd, size, verify_mode, limits)  # the whole file: its own bytes, verified as any
    return SpanAudio(data, ext[1:], info, None)


def _frames(row: Row, sr: int, frames: int, channels: int) -> tuple[int, int, int | None]:
    offset = row.offset or 0.0
    start = round(offset * sr)
    end = frames if row.length is None else round((offset + row.length) * sr)
    audio_s = frames / sr
    if start >= frames:
        raise AudioRejected("segment_out_of_range", f"starts at {offset:.3f} s, the audio is {audio_s:.3f} s")
    if end > frames + END_TOLERANCE * sr:
        raise AudioRejected("segment_out_of_range", f"ends at {end / sr:.3f} s, the audio is {audio_s:.3f} s")
    channel = row.channel if channels > 1 else None
    if channel is not None and not 0 <= channel < channels:
        raise AudioRejected("segment_out_of_range", f"channel {channel} of a {channels}-channel file")
    return start, min(end, frames), channel


def _read(f: sf.SoundFile, start: int, end: int, channel: int | None, row: Row) -> np.ndarray:
    dtype = "int16" if f.subtype in _INT16 else "int32" if f.subtype in _INT24 else "float32"
    try:
        f.seek(start)
        x = f.read(end - start, dtype=dtype, always_2d=True)
    except Exception as err:
        raise AudioRejected("audio_undecodable", f"reading frames {start}-{end}: {' '.join(str(err).split())[:160]}"
                            ) from None
    if len(x) < end - start and (row.length is not None or len(x) == 0):
        raise AudioRejected("audio_undecodable", f"decoded {len(x)} of the span's {end - start} frames (truncated?)")
    return x if channel is None else x[:, [channel]]


def _store(x: np.ndarray, sr: int, start: int) -> SpanAudio:
    if x.dtype == np.int16:
        fmt, out_subtype, ext = "FLAC", "PCM_16", "flac"
    elif x.dtype == np.int32:
        fmt, out_subtype, ext = "FLAC", "PCM_24", "flac"
    else:
        if not np.isfinite(x).all():
            raise AudioRejected("audio_not_finite", "NaN or infinite samples")
        fmt, out_subtype, ext = "WAV", "FLOAT", "wav"
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=out_subtype)
    info = AudioInfo(frames=len(x), sample_rate=sr, channels=x.shape[1], format=fmt)
    return SpanAudio(buf.getvalue(), ext, info, round(start / sr, 6))

