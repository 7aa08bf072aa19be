"""Audio verification: is this file whole, and how long is it?

A crawl holds zero-byte files, truncated uploads and garbage. libsndfile alone does not notice every one of them:
a truncated Ogg/Opus file decodes without error up to the cut, and a corrupt Ogg page is dropped silently (libogg
checks the page CRC and skips it). So `verify` (bytes in memory) and `verify_file` (a file, header first: see
corpus.bounds) do a full decode and then compare the number of decoded frames with what the container promises,
read independently of libsndfile:

- Ogg (Opus, Vorbis): the page chain must be contiguous from the first byte to the last, the last page must carry the
  end-of-stream flag, and its granule position (minus Opus pre-skip) must equal the decoded length;
- WAV: the `data` chunk must be as long as its header says;
- anything else (FLAC, …): the decoded length must equal the header's frame count.

Float files (WAV FLOAT/DOUBLE) must hold no NaN or infinity (`audio_not_finite`). The full decode is the safe
default; `mode="header"` only opens the file and runs the container checks (no decode, so no NaN check), for
corpora already known to be clean. Costs are in benchmarks/RESULTS.md ("Shards").
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import soundfile as sf

from fastasr.audio import SAMPLE_RATES
from fastasr.corpus.bounds import max_audio_bytes, read_at

VERIFY_MODES = ("full", "header")
_BLOCK_SAMPLES = 1 << 17  # samples (frames × channels) decoded per read: bounded memory for long or wide files
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}  # the only stored formats that can hold NaN or infinity
# A header's length is an estimate for some formats (MP3) and may differ from the decoded one by a frame; the
# duration filters apply to the decoded length, so the header alone rejects only what is clearly outside them.
HEADER_SLACK = 0.01

Read = Callable[[int, int], bytes]  # (offset, n) → up to n bytes of the file at offset


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class AudioLimits:
    """What a sample's audio may be, checked on its header before the file is read or decoded (corpus.bounds)."""

    min_duration: float = 0.0
    max_duration: float = math.inf

    @property
    def max_bytes(self) -> float:
        return max_audio_bytes(self.max_duration)


class AudioRejected(ValueError):
    """Audio that must not reach a shard; `reason` is `audio_empty`, `audio_undecodable`, `audio_not_finite`,
    `audio_too_large`, `sample_rate_out_of_range` or, from the header, `duration_too_short` / `duration_too_long`
    (with `duration`); for a span cut out of a recording also `segment_out_of_range` (segments.py)."""

    def __init__(self, reason: str, detail: str = "", duration: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.duration = duration


def verify(data: bytes, mode: str = "full") -> AudioInfo:
    """Check that `data` is a whole, decodable audio file and return its length; raise AudioRejected if not."""
    if not data:
        raise AudioRejected("audio_empty", "0 bytes")
    with open_sound(io.BytesIO(data)) as f:
        return _verified(f, mode, len(data), partial(_slice, data))


def verify_file(fd: int, size: int, mode: str = "full", limits: AudioLimits = AudioLimits()
                ) -> tuple[bytes, AudioInfo]:
    """(the file's bytes, its info) for a whole file open as `fd`, `size` bytes long. Its header is checked against
    `limits` first (rate, duration, size), so a file that fails them is neither read nor decoded; then it is
    decoded from the file (mode full) and its container checked, and only then are its bytes — what a shard
    stores — read. Under mode header a file is never decoded, and read whole only once it has passed."""
    if size == 0:
        raise AudioRejected("audio_empty", "0 bytes")
    os.lseek(fd, 0, os.SEEK_SET)
    with open_sound(fd) as f:
        check_rate(f.samplerate)
        check_duration(f.frames, f.samplerate, limits)
        if size > limits.max_bytes:
            raise AudioRejected("audio_too_large", f"{size} bytes, over the {limits.max_bytes:.0f} bytes of "
                                                   f"{limits.max_duration:g} s at the highest rate")
        info = _verified(f, mode, size, partial(read_at, fd))
    data = read_at(fd, 0, size)
    if len(data) != size:
        raise AudioRejected("audio_undecodable", f"{len(data)} of {size} bytes read (the file shrank)")
    return data, info


def open_sound(file) -> sf.SoundFile:
    """libsndfile on a file object or descriptor (left open); AudioRejected when it is not audio."""
    try:
        return sf.SoundFile(file, closefd=False) if isinstance(file, int) else sf.SoundFile(file)
    except Exception as err:  # libsndfile raises its own error type, and RuntimeError on some builds
        raise AudioRejected("audio_undecodable", _short(err)) from None


def check_rate(sr: int) -> None:
    if not SAMPLE_RATES[0] <= sr <= SAMPLE_RATES[1]:
        raise AudioRejected("sample_rate_out_of_range", f"{sr} Hz (accepted: {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz)")


def check_duration(frames: int, sr: int, limits: AudioLimits) -> None:
    """Rejects, before any decode, audio whose header length is clearly outside the duration filters."""
    seconds = frames / sr
    slack = HEADER_SLACK * seconds + 1 / sr
    if seconds - slack > limits.max_duration:
        raise AudioRejected("duration_too_long", f"{seconds:.3f} s", seconds)
    if seconds + slack < limits.min_duration:
        raise AudioRejected("duration_too_short", f"{seconds:.3f} s", seconds)


def _verified(f: sf.SoundFile, mode: str, size: int, read: Read) -> AudioInfo:
    sr, channels, header_frames, fmt = f.samplerate, f.channels, f.frames, f.format
    if channels <= 0:
        raise AudioRejected("audio_undecodable", f"sample_rate={sr} channels={channels}")
    check_rate(sr)
    if mode == "full":
        frames = _decode_all(f)
    elif mode == "header":
        frames = header_frames
    else:
        raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
    if frames <= 0:
        raise AudioRejected("audio_undecodable", "no audio frames")
    expected = _container_frames(read, size, fmt, sr, header_frames)
    if abs(frames - expected) > 1:
        raise AudioRejected("audio_undecodable", f"decoded {frames} frames, container says {expected} (truncated?)")
    return AudioInfo(frames=frames, sample_rate=sr, channels=channels, format=fmt)


def _decode_all(f: sf.SoundFile) -> int:
    """Frames decoded, a block at a time; float files are decoded as float and checked for NaN and infinity (the
    loader would skip such a sample every epoch)."""
    floats = f.subtype in _FLOAT_SUBTYPES
    block = max(1, _BLOCK_SAMPLES // f.channels)
    buf = np.empty((block, f.channels), dtype=np.float32 if floats else np.int16)
    frames = 0
    while True:
        try:
            n = len(f.read(block, dtype=buf.dtype.name, out=buf))
        except Exception as err:
            raise AudioRejected("audio_undecodable", f"decode failed after {frames} frames: {_short(err)}") from None
        if floats and not np.isfinite(buf[:n]).all():
            raise AudioRejected("audio_not_finite", f"NaN or infinite samples in frames {frames}-{frames + n}")
        frames += n
        if n < block:
            return frames


def _slice(data: bytes, offset: int, n: int) -> bytes:
    return data[offset:offset + n]


def _container_frames(read: Read, size: int, fmt: str, sr: int, header_frames: int) -> int:
    if fmt == "OGG":
        return _ogg_frames(read, size, sr)
    if fmt == "WAV":
        _check_wav(read, size)
    return header_frames


def _ogg_frames(read: Read, n: int, sr: int) -> int:
    """Frames promised by an Ogg stream: walk every page header, check the chain, read the last granule."""
    pos = 0
    last_granule, last_flags, preskip, codec_rate = -1, 0, 0, sr
    first = True
    while pos < n:
        head = read(pos, 27 + 255)  # the fixed header and the longest segment table
        if len(head) < 27 or head[:4] != b"OggS":
            raise AudioRejected("audio_undecodable", f"broken Ogg page chain at byte {pos} of {n}")
        flags = head[5]
        granule = struct.unpack_from("<q", head, 6)[0]
        nseg = head[26]
        if len(head) < 27 + nseg:
            raise AudioRejected("audio_undecodable", f"Ogg page header cut at byte {pos} of {n}")
        body = pos + 27 + nseg
        size = sum(head[27 : 27 + nseg])
        if body + size > n:
            raise AudioRejected("audio_undecodable", f"Ogg page cut: needs {body + size} bytes, file has {n}")
        if first:
            packet = read(body, min(size, 19))
            if packet[:8] == b"OpusHead" and len(packet) >= 12:
                preskip = struct.unpack_from("<H", packet, 10)[0]
                codec_rate = 48000  # Opus granules always count 48 kHz samples
            first = False
        if granule != -1:
            last_granule = granule
        last_flags = flags
        pos = body + size
    if not last_flags & 0x04:
        raise AudioRejected("audio_undecodable", "Ogg stream has no end-of-stream page (truncated)")
    if last_granule < 0:
        raise AudioRejected("audio_undecodable", "Ogg stream has no granule position")
    return round((last_granule - preskip) * sr / codec_rate)


def _check_wav(read: Read, n: int) -> None:
    head = read(0, 12)
    if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return  # RF64 / W64 etc.: trust libsndfile
    big = head[:4] == b"RIFX"
    pos = 12
    while pos + 8 <= n:
        chunk = read(pos, 8)
        cid = chunk[:4]
        (size,) = struct.unpack_from(">I" if big else "<I", chunk, 4)
        if cid == b"data":
            have = n - pos - 8
            if size != 0xFFFFFFFF and have < size:
                raise AudioRejected("audio_undecodable", f"WAV data chunk has {have} of {size} bytes (truncated)")
            return
        pos += 8 + size + (size & 1)
    raise AudioRejected("audio_undecodable", "WAV has no data chunk")


def _short(err: Exception) -> str:
    # "Error opening <_io.BytesIO object at 0x7f…>: …" carries an address; rejected.tsv must be reproducible
    text = re.sub(r"Error opening (<[^>]*>|\d+): ", "", str(err))
    return " ".join(text.split())[:200]
