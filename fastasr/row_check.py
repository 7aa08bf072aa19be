"""One input row → an accepted `Sample` or a `Reject` with a named reason. Runs inside the writer's workers.

Checks go cheapest first, so a row whose transcript is unusable never costs an audio decode. Each row gets exactly
one reason: the first check it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastasr.audio_check import AudioRejected, verify
from fastasr.corpus import Row
from fastasr.text import TextConfig, TextRejected, normalize

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
        return Reject(row.source, row.reject, row.detail)
    if row.audio is None:
        return Reject(row.source, "audio_missing", "no audio file for this transcript")
    data = _read_bytes(row, row.audio, "audio_missing", "audio_unreadable")
    if isinstance(data, Reject):
        return data

    raw = _read_transcript(row)
    if isinstance(raw, Reject):
        return raw
    try:
        text = normalize(raw, text_config)
    except TextRejected as err:
        return Reject(row.source, err.reason, err.detail)

    try:
        info = verify(data, filters.verify)
    except AudioRejected as err:
        return Reject(row.source, err.reason, err.detail)
    duration = info.duration
    caught = seed_rule(duration, len(text.split()))
    if duration < filters.min_duration:
        return Reject(row.source, "duration_too_short", f"{duration:.3f} s", caught)
    if duration > filters.max_duration:
        return Reject(row.source, "duration_too_long", f"{duration:.3f} s", caught)
    cps = chars_per_second(text, duration)
    if not filters.min_cps <= cps <= filters.max_cps:
        return Reject(row.source, "speaking_rate", f"{cps:.1f} chars/s over {duration:.2f} s", caught)
    ext = row.audio.rsplit(".", 1)[-1].lower()
    return Sample(row.key, row.source, ext, data, text, raw, duration, info.sample_rate, info.channels)


def _read_bytes(row: Row, path: str, missing: str, unreadable: str) -> bytes | Reject:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return Reject(row.source, missing, path)
    except OSError as err:
        return Reject(row.source, unreadable, f"{type(err).__name__}: {err.strerror}")


def _read_transcript(row: Row) -> str | Reject:
    if row.text is not None:
        raw = row.text
    else:
        if row.text_path is None:
            return Reject(row.source, "transcript_missing", "no .txt beside the audio")
        blob = _read_bytes(row, row.text_path, "transcript_missing", "transcript_unreadable")
        if isinstance(blob, Reject):
            return blob
        try:
            raw = blob.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            return Reject(row.source, "transcript_not_utf8", f"byte {err.start}: {blob[err.start:err.start + 4]!r}")
    raw = raw.strip()
    if not raw:
        return Reject(row.source, "transcript_empty")
    return raw
