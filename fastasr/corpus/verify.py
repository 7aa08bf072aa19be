"""Audio verification: is this file whole, and how long is it?

A crawl holds zero-byte files, truncated uploads and garbage. libsndfile alone does not notice every one of them:
a truncated Ogg/Opus file decodes without error up to the cut, and a corrupt Ogg page is dropped silently (libogg
checks the page CRC and skips it). So `verify` does a full decode from the bytes in memory and then compares the
number of decoded frames with what the container promises, read independently of libsndfile:

- Ogg (Opus, Vorbis): the page chain must be contiguous from the first byte to the last, the last page must carry the
  end-of-stream flag, and its granule position (minus Opus pre-skip) must equal the decoded length;
- WAV: the `data` chunk must be as long as its header says;
- anything else (FLAC, …): the decoded length must equal the header's frame count.

The full decode is the safe default; `mode="header"` only opens the file and runs the container checks (no decode),
for corpora already known to be clean. Costs are in benchmarks/RESULTS.md ("Shards").
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

VERIFY_MODES = ("full", "header")
_BLOCK = 1 << 16  # frames decoded per read: bounded memory for long files


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


class AudioRejected(ValueError):
    """Audio that must not reach a shard; `reason` is `audio_empty` or `audio_undecodable` (and, for a span cut
    out of a recording, `audio_missing`, `audio_unreadable` or `segment_out_of_range`: see segments.py)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def verify(data: bytes, mode: str = "full") -> AudioInfo:
    """Check that `data` is a whole, decodable audio file and return its length; raise AudioRejected if not."""
    if not data:
        raise AudioRejected("audio_empty", "0 bytes")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as err:  # libsndfile raises its own error type, and RuntimeError on some builds
        raise AudioRejected("audio_undecodable", _short(err)) from None
    with f:
        sr, channels, header_frames, fmt = f.samplerate, f.channels, f.frames, f.format
        if sr <= 0 or channels <= 0:
            raise AudioRejected("audio_undecodable", f"sample_rate={sr} channels={channels}")
        if mode == "full":
            frames = _decode_all(f)
        elif mode == "header":
            frames = header_frames
        else:
            raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
    if frames <= 0:
        raise AudioRejected("audio_undecodable", "no audio frames")
    expected = _container_frames(data, fmt, sr, header_frames)
    if abs(frames - expected) > 1:
        raise AudioRejected("audio_undecodable", f"decoded {frames} frames, container says {expected} (truncated?)")
    return AudioInfo(frames=frames, sample_rate=sr, channels=channels, format=fmt)


def _decode_all(f: sf.SoundFile) -> int:
    buf = np.empty((_BLOCK, f.channels), dtype=np.int16)
    frames = 0
    try:
        while True:
            n = len(f.read(_BLOCK, dtype="int16", out=buf))
            frames += n
            if n < _BLOCK:
                return frames
    except Exception as err:
        raise AudioRejected("audio_undecodable", f"decode failed after {frames} frames: {_short(err)}") from None


def _container_frames(data: bytes, fmt: str, sr: int, header_frames: int) -> int:
    if fmt == "OGG":
        return _ogg_frames(data, sr)
    if fmt == "WAV":
        _check_wav(data)
    return header_frames


def _ogg_frames(data: bytes, sr: int) -> int:
    """Frames promised by an Ogg stream: walk every page header, check the chain, read the last granule."""
    pos, n = 0, len(data)
    last_granule, last_flags, preskip, codec_rate = -1, 0, 0, sr
    first = True
    while pos < n:
        if n - pos < 27 or data[pos : pos + 4] != b"OggS":
            raise AudioRejected("audio_undecodable", f"broken Ogg page chain at byte {pos} of {n}")
        flags = data[pos + 5]
        granule = struct.unpack_from("<q", data, pos + 6)[0]
        nseg = data[pos + 26]
        if n - pos < 27 + nseg:
            raise AudioRejected("audio_undecodable", f"Ogg page header cut at byte {pos} of {n}")
        body = pos + 27 + nseg
        size = sum(data[pos + 27 : body])
        if body + size > n:
            raise AudioRejected("audio_undecodable", f"Ogg page cut: needs {body + size} bytes, file has {n}")
        if first:
            packet = data[body : body + size]
            if packet[:8] == b"OpusHead":
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


def _check_wav(data: bytes) -> None:
    if data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return  # RF64 / W64 etc.: trust libsndfile
    big = data[:4] == b"RIFX"
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from(">I" if big else "<I", data, pos + 4)
        if cid == b"data":
            have = len(data) - pos - 8
            if size != 0xFFFFFFFF and have < size:
                raise AudioRejected("audio_undecodable", f"WAV data chunk has {have} of {size} bytes (truncated)")
            return
        pos += 8 + size + (size & 1)
    raise AudioRejected("audio_undecodable", "WAV has no data chunk")


def _short(err: Exception) -> str:
    # "Error opening <_io.BytesIO object at 0x7f…>: …" carries an address; rejected.tsv must be reproducible
    text = re.sub(r"Error opening <[^>]*>: ", "", str(err))
    return " ".join(text.split())[:200]
