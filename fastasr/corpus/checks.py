"""One input row → an accepted `Sample` or a `Reject` with a named reason. Runs inside the writer's workers.

Checks go cheapest first, so a row whose transcript is unusable never costs an audio decode, and an audio file
whose header is out of bounds (corpus.bounds: rate, duration, size) is neither read nor decoded. Each row gets
exactly one reason: the first check it fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastasr.corpus.bounds import MAX_TRANSCRIPT_BYTES, NotRegularFile, open_regular, read_capped
from fastasr.corpus.rows import Row
from fastasr.corpus.segments import cut_span, needs_cut
from fastasr.corpus.verify import VERIFY_MODES, AudioLimits, AudioRejected, verify_file
from fastasr.errors import UserError
from fastasr.text.normalization import TextConfig, TextRejected, normalize

# The seed notebook dropped "1-second clips with 10+ words"; we read that as: duration rounds to at most one second
# (< 1.5 s) and the transcript has 10 or more words. Reported beside our speaking-rate rule, never applied.
SEED_RULE = "duration < 1.5 s and words >= 10"


def seed_rule(duration: float, words: int) -> bool:
    return duration < 1.5 and words >= 10


@dataclass(frozen=True)
class Filters:
    """What an accepted utterance must satisfy besides being whole and in the alphabet."""

    min_duration: float = 0.3
    max_duration: float = 30.0
    min_cps: float = 1.0  # characters (spaces excluded) per second
    max_cps: float = 25.0
    verify: str = "full"

    def __post_init__(self) -> None:
        # Named as the shard command's options: a contradiction is found before any file is read.
        for low, high, unit in (("min_duration", "max_duration", "s"), ("min_cps", "max_cps", "chars/s")):
            lo, hi = getattr(self, low), getattr(self, high)
            if not lo >= 0:
                raise UserError(f"--{low.replace('_', '-')} {lo}: wants a number >= 0 ({unit})")
            if not hi > lo:
                raise UserError(f"--{high.replace('_', '-')} {hi} must be above --{low.replace('_', '-')} {lo} "
                                f"(nothing could pass both)")
        if self.verify not in VERIFY_MODES:
            raise UserError(f"--verify {self.verify!r}: choose from {', '.join(VERIFY_MODES)}")

    @property
    def limits(self) -> AudioLimits:
        """The duration filters, applied to an audio header before the file is read (corpus.bounds)."""
        return AudioLimits(self.min_duration, self.max_duration)


@dataclass(frozen=True)
class Sample:
    key: str
    source: str
    ext: str
    audio: bytes
    text: str
    raw_text: str
    duration: float
    sample_rate: int
    channels: int
    offset: float | None = None  # a segment's start in its recording, s


@dataclass(frozen=True)
class Reject:
    source: str
    reason: str
    detail: str = ""
    seed_rule: bool = False  # would the seed's rule have dropped it (only known once duration and text are)


def chars_per_second(text: str, duration: float) -> float:
    return sum(1 for ch in text if ch != " ") / duration if duration > 0 else float("inf")


def check_row(row: Row, text_config: TextConfig, filters: Filters) -> Sample | Reject:
    if row.reject:
        return Reject(row.label, row.reject, row.detail)
    if row.audio is None:
        return Reject(row.label, "audio_missing", "no audio file for this transcript")
    fd = _open(row, row.audio, "audio_missing", "audio_unreadable")
    if isinstance(fd, Reject):
        return fd
    try:
        return _check_open(row, fd, text_config, filters)
    finally:
        os.close(fd)


def _check_open(row: Row, fd: int, text_config: TextConfig, filters: Filters) -> Sample | Reject:
    raw = read_transcript(row)
    if isinstance(raw, Reject):
        return raw
    try:
        text = normalize(raw, text_config)
    except TextRejected as err:
        return Reject(row.label, err.reason, err.detail)
    words = len(text.split())

    size = os.fstat(fd).st_size
    try:
        if needs_cut(row):  # a span: decoded without reading the whole recording
            span = cut_span(row, fd, size, filters.verify, filters.limits)
            data, ext, info, offset = span.data, span.ext, span.info, span.offset
        else:
            data, info = verify_file(fd, size, filters.verify, filters.limits)
            ext, offset = row.audio.rsplit(".", 1)[-1].lower(), None
    except AudioRejected as err:
        caught = err.duration is not None and seed_rule(err.duration, words)
        return Reject(row.label, err.reason, err.detail, caught)
    except OSError as err:  # the disk, not the data: reading an opened file failed
        return Reject(row.label, "audio_unreadable", f"{type(err).__name__}: {err.strerror}")
    duration = info.duration
    caught = seed_rule(duration, words)
    if duration < filters.min_duration:
        return Reject(row.label, "duration_too_short", f"{duration:.3f} s", caught)
    if duration > filters.max_duration:
        return Reject(row.label, "duration_too_long", f"{duration:.3f} s", caught)
    cps = chars_per_second(text, duration)
    if not filters.min_cps <= cps <= filters.max_cps:
        return Reject(row.label, "speaking_rate", f"{cps:.1f} chars/s over {duration:.2f} s", caught)
    return Sample(row.key, row.source, ext, data, text, raw, duration, info.sample_rate, info.channels, offset)


def _open(row: Row, path: str, missing: str, unreadable: str) -> int | Reject:
    """A descriptor of the regular file at path, or the row rejected (never opened when it is not one)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        return Reject(row.label, missing, path)
    except NotRegularFile as err:
        return Reject(row.label, unreadable, str(err))
    except OSError as err:
        return Reject(row.label, unreadable, f"{type(err).__name__}: {err.strerror}")


def read_transcript(row: Row) -> str | Reject:
    if row.text is not None:
        raw = row.text
    else:
        if row.text_path is None:
            return Reject(row.label, "transcript_missing", "no .txt beside the audio")
        fd = _open(row, row.text_path, "transcript_missing", "transcript_unreadable")
        if isinstance(fd, Reject):
            return fd
        try:
            blob = read_capped(fd, MAX_TRANSCRIPT_BYTES)
        except OSError as err:
            return Reject(row.label, "transcript_unreadable", f"{type(err).__name__}: {err.strerror}")
        finally:
            os.close(fd)
        if len(blob) > MAX_TRANSCRIPT_BYTES:
            return Reject(row.label, "transcript_too_long", f"over {MAX_TRANSCRIPT_BYTES} bytes")
        try:
            raw = blob.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            return Reject(row.label, "transcript_not_utf8", f"byte {err.start}: {blob[err.start:err.start + 4]!r}")
    raw = raw.strip()
    if not raw:
        return Reject(row.label, "transcript_empty")
    return raw
