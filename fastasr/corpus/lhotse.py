"""Lhotse manifests — a CutSet (`cuts.jsonl[.gz]`) or a RecordingSet + SupervisionSet — read as plain JSON lines.

No `lhotse` import: the three record types are small, documented JSON objects, and the package (with its own
dependency tree) would be installed for a few dictionary lookups. Each supervision is one row: its span in the
recording (a cut's supervisions are relative to the cut's start) is a segment, unless it covers the whole
recording, in which case the row is the whole file and keeps the file's own bytes and key. A supervisions manifest
finds its recordings by its own name with `supervisions` replaced by `recordings` (Lhotse's naming:
`librispeech_supervisions_dev-clean.jsonl.gz` beside `librispeech_recordings_dev-clean.jsonl.gz`), and the other
way round. Read: single-file recordings (`sources[0].type == "file"`), mono or one channel of several, with no
transforms other than Resample (the loader resamples anyway). Rejected as `manifest_unsupported`: URL / command /
in-memory sources, one file per channel, speed or volume transforms, MixedCut / PaddingCut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from fastasr.audio import SAMPLE_RATES
from fastasr.corpus.rows import (Row, beyond_any_recording, json_record, malformed, manifest_lines, relative,
                                 resolve_str)
from fastasr.errors import UserError


def read(path: Path, root: Path, kind: str) -> Iterator[Row]:
    if kind == "cuts":
        return read_cuts(path, root)
    if kind == "supervisions":
        return read_supervisions(path, sibling(path, "supervisions", "recordings"), root)
    return read_supervisions(sibling(path, "recordings", "supervisions"), path, root)


def sibling(path: Path, word: str, other: str) -> Path:
    """The manifest beside `path` whose name has `other` where `path`'s has `word` (the last occurrence)."""
    head, found, tail = path.name.rpartition(word)
    if not found:
        raise UserError(f"{path} is a Lhotse {word} manifest: its {other} manifest is found by replacing "
                        f"'{word}' in its name with '{other}', and the name has no '{word}'")
    twin = path.with_name(head + other + tail)
    if not twin.is_file():
        raise UserError(f"Lhotse {word} manifest {path} needs its {other} manifest {twin}, which does not exist")
    return twin


@dataclass(frozen=True)
class Recording:
    audio: str  # as the manifest names it
    channels: tuple[int, ...]  # channel ids, in the file's channel order
    sampling_rate: int
    num_samples: int
    problem: tuple[str, str] | None = None  # (reason, detail) when it cannot be read


def parse_recording(obj: dict) -> Recording:
    try:
        sources = obj["sources"]
        rate = int(obj["sampling_rate"])
        samples = int(obj.get("num_samples") or round(float(obj["duration"]) * rate))
        src = sources[0]
        audio, channels = str(src["source"]), tuple(int(c) for c in src.get("channels") or [0])
        if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
            raise ValueError(f"sampling_rate {rate} Hz, accepted {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz")
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as err:
        return Recording("", (0,), 1, 0, ("manifest_malformed", f"recording {obj.get('id')!r}: {err!r}"[:300]))
    problem = None
    transforms = [t.get("name") for t in obj.get("transforms") or [] if isinstance(t, dict)]
    if len(sources) != 1:
        problem = f"{len(sources)} audio sources (one file per channel is not read)"
    elif src.get("type", "file") != "file":
        problem = f"source type {src.get('type')!r} (only 'file' is read)"
    elif any(name != "Resample" for name in transforms):
        problem = f"transforms {transforms} (only Resample is applied, by the loader)"
    return Recording(audio, channels, rate, samples, ("manifest_unsupported", problem) if problem else None)


def supervision_row(sup: dict, rec: Recording, root: Path, cut_start: float = 0.0, where: str = "") -> Row:
    """One supervision of `rec` → a Row: the whole file when the span covers it, else a segment."""
    try:
        start = cut_start + float(sup["start"])
        length = float(sup["duration"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        return Row(where, None, reject="manifest_malformed", detail=f"supervision {sup.get('id')!r}: {err!r}")
    if not (math.isfinite(start) and math.isfinite(length)):  # before round(): inf and nan have no sample index
        return Row(where, None, reject="manifest_malformed", detail=f"supervision {sup.get('id')!r}: span "
                                                                      f"{start}+{length}")
    source, audio = relative(rec.audio, root), resolve_str(rec.audio, root)
    text, speaker = sup.get("text"), sup.get("speaker")
    channel, channel_problem = pick_channel(sup.get("channel"), rec.channels)
    fields = dict(text=text if isinstance(text, str) else None, speaker=None if speaker is None else str(speaker))
    row = beyond_any_recording(Row(source, audio, offset=start, length=length, channel=channel, **fields), where)
    if row.reject:
        return row
    if (channel is None and round(start * rec.sampling_rate) == 0
            and round((start + length) * rec.sampling_rate) == rec.num_samples):
        row = Row(source, audio, **fields)  # the whole recording: the file itself
    if rec.problem:
        return replace(row, reject=rec.problem[0], detail=rec.problem[1])
    if channel_problem:
        return replace(row, reject="manifest_unsupported", detail=channel_problem)
    if row.offset is not None and row.offset < 0:
        return replace(row, reject="segment_out_of_range", detail=f"starts at {row.offset} s, before the audio")
    if row.length is not None and row.length <= 0:
        return replace(row, reject="segment_empty", detail=f"duration {row.length} s")
    if not isinstance(text, str):
        return replace(row, reject="transcript_missing", detail=f"supervision {sup.get('id')!r} has no text")
    return row


def pick_channel(channel, channels: tuple[int, ...]) -> tuple[int | None, str]:
    """(index of the file channel to keep or None for all, problem): a supervision on one channel of several keeps
    that channel; on all of them (or of a mono file) it is the whole signal."""
    wanted = channel if isinstance(channel, list) else [0 if channel is None else channel]
    if not all(isinstance(c, int) for c in wanted):
        return None, f"supervision channel {channel!r} is not a channel number"[:200]
    if len(channels) == 1 or sorted(wanted) == sorted(channels):
        return None, ""
    if len(wanted) == 1 and wanted[0] in channels:
        return channels.index(wanted[0]), ""
    return None, f"supervision on channels {wanted} of a recording with channels {list(channels)}"


def read_cuts(path: Path, root: Path) -> Iterator[Row]:
    """A CutSet: every supervision of every MonoCut / MultiCut; a cut without supervisions is one rejected row."""
    for lineno, line, problem in manifest_lines(path):
        cut, problem = (None, problem) if problem else json_record(line)
        if problem:
            yield malformed(path, lineno, problem)
            continue
        if not isinstance(cut, dict):
            yield malformed(path, lineno, f"a {type(cut).__name__}, not a cut")
            continue
        kind, name = cut.get("type", "MonoCut"), cut.get("id")
        if kind not in ("MonoCut", "MultiCut"):
            yield malformed(path, lineno, f"{kind} {name!r} (only MonoCut and MultiCut are read)",
                            "manifest_unsupported")
            continue
        if not isinstance(cut.get("recording"), dict):
            yield malformed(path, lineno, f"cut {name!r} has no recording", "manifest_unsupported")
            continue
        sups = cut.get("supervisions") or []
        if not sups:
            yield malformed(path, lineno, f"cut {name!r} has no supervisions", "transcript_missing")
            continue
        rec = parse_recording(cut["recording"])
        try:
            cut_start = float(cut.get("start", 0.0))
        except (TypeError, ValueError, OverflowError):
            yield malformed(path, lineno, f"cut {name!r}: start {cut.get('start')!r}")
            continue
        for sup in sups:
            yield supervision_row(sup if isinstance(sup, dict) else {}, rec, root, cut_start,
                                  f"{path.name}:{lineno}")


def read_supervisions(sup_path: Path, rec_path: Path, root: Path) -> Iterator[Row]:
    """A SupervisionSet with its RecordingSet: every supervision is a row; a recordings line that cannot be read
    is one rejected row too (nothing in the input disappears unnamed)."""
    recordings: dict[str, Recording] = {}
    for lineno, line, problem in manifest_lines(rec_path):
        obj, problem = (None, problem) if problem else json_record(line)
        try:
            if problem:
                raise ValueError(problem)
            recordings[str(obj["id"])] = parse_recording(obj)
        except (ValueError, KeyError, TypeError) as err:
            yield malformed(rec_path, lineno, problem or f"{type(err).__name__}: {err}")
    for lineno, line, problem in manifest_lines(sup_path):
        where = f"{sup_path.name}:{lineno}"
        sup, problem = (None, problem) if problem else json_record(line)
        try:
            if problem:
                raise ValueError(problem)
            rec_id = str(sup["recording_id"])
        except (ValueError, KeyError, TypeError) as err:
            yield malformed(sup_path, lineno, problem or f"{type(err).__name__}: {err}")
            continue
        if rec_id not in recordings:
            yield Row(where, None, reject="audio_missing", detail=f"recording {rec_id!r} not in {rec_path.name}")
            continue
        yield supervision_row(sup, recordings[rec_id], root, 0.0, where)
