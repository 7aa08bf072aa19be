"""What reading one corpus input may cost, decided before it is read: nothing in a corpus makes the shard writer
read without end, block, or allocate what a file claims.

- Audio and transcripts are opened only when they are regular files (a symbolic link is followed to what it
  names): a link to /dev/zero would be read until memory runs out and a FIFO blocks its reader, so either is
  rejected (`audio_unreadable` / `transcript_unreadable`, "not a regular file") without being read.
- An audio file's header comes before its bytes (corpus.verify): a rate outside fastasr.audio.SAMPLE_RATES
  (1 kHz–192 kHz) is `sample_rate_out_of_range`, a duration outside --min-duration…--max-duration is
  `duration_too_short` / `duration_too_long`, found without reading or decoding the rest.
- `max_audio_bytes(max_duration)`: an audio file, or a decoded span, larger than `max_duration` seconds of
  MAX_BYTES_PER_SECOND (8 channels of 32-bit samples at 192 kHz: 6.1 MB/s, 184 MB at the default 30 s) plus
  HEADER_BYTES (16 MiB of tags and cover art) is `audio_too_large`, before it is read: a header can understate
  its length (a 1-s header on a 2 GB file), a file's size cannot. Generous on purpose: 30 s of 16-kHz mono PCM
  is under 1 MB, so only files that are not utterances reach it.
- MAX_TRANSCRIPT_BYTES (64 KiB: a 30-s utterance has under 1 KiB of text): a longer .txt is `transcript_too_long`.
- MAX_LINE_BYTES (4 MiB): a longer manifest line is `manifest_malformed` ("line longer than …") and the rest of
  the manifest goes on; parsing JSON costs up to ~50× its text, so a line is bounded before it is parsed. Long-form
  Lhotse cuts with word alignments run to a megabyte or two; nothing legitimate comes near 4 MiB.
- MAX_RECORDING_SECONDS (10^7 s, 116 days): a manifest span ending later is `segment_out_of_range` (a NeMo
  `duration` of 1e308 would overflow the key's milliseconds).
"""

from __future__ import annotations

import os
import stat
from typing import Iterator

from fastasr.audio import SAMPLE_RATES

MAX_BYTES_PER_SECOND = 192_000 * 8 * 4
HEADER_BYTES = 16 << 20
MAX_TRANSCRIPT_BYTES = 64 << 10
MAX_LINE_BYTES = 4 << 20
MAX_RECORDING_SECONDS = 10**7

__all__ = ["SAMPLE_RATES", "MAX_BYTES_PER_SECOND", "HEADER_BYTES", "MAX_TRANSCRIPT_BYTES", "MAX_LINE_BYTES",
           "MAX_RECORDING_SECONDS", "NotRegularFile", "max_audio_bytes", "open_regular", "read_at", "read_capped",
           "bounded_lines"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """A path that names something other than a regular file (after following links)."""


def max_audio_bytes(max_duration: float) -> float:
    return max_duration * MAX_BYTES_PER_SECOND + HEADER_BYTES


def _check_regular(st: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        raise NotRegularFile(f"not a regular file ({kind}): {path}")


def open_regular(path: str) -> int:
    """A read-only descriptor of the regular file at `path`. FileNotFoundError when nothing is there,
    NotRegularFile for a device, FIFO, directory or socket, another OSError when it cannot be opened."""
    _check_regular(os.stat(path), path)  # before open(): opening a FIFO blocks until someone writes to it
    # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open() still returns, and fstat refuses it
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(fd: int, offset: int, n: int) -> bytes:
    """Up to n bytes at offset (fewer at the end of the file), whatever the descriptor's position."""
    parts, got = [], 0
    while got < n:
        chunk = os.pread(fd, n - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_capped(fd: int, cap: int) -> bytes:
    """The whole file, or cap + 1 bytes when it is longer than cap (the caller rejects it)."""
    return read_at(fd, 0, cap + 1)


def bounded_lines(f, limit: int = MAX_LINE_BYTES, ends: tuple = (b"\n",)) -> Iterator:
    """The lines of a stream (binary, gzip, or text with `ends` ("\\n", "\\r") for newline=""), each with its line end;
    None for a line of more than `limit` bytes or characters (its end not counted), which is skipped without ever
    holding more than `limit` + 1 of them."""
    while line := f.readline(limit + 1):
        if line.endswith(ends) or len(line) <= limit:
            yield line
            continue
        while line and not line.endswith(ends):  # the rest of the long line, a block at a time
            line = f.readline(limit + 1)
        yield None
