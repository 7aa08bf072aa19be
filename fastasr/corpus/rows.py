"""A corpus row and the helpers every corpus reader shares: keys, segment rows, manifest lines, paths.

A `Row` is one input row, before anything is read from disk. Checking it (does the audio exist, is the transcript
UTF-8, …) is the shard writer's job (checks.py), so that every row — good or bad — is accounted for in one place.
Readers only reject what cannot become a row at all (a malformed manifest line, a span that cannot exist), as
`Row(reject=…)`. A row with an `offset` is a segment: the span [offset, offset + length) of its audio file (length
None: to the end), a sample of its own (segments.py cuts it out).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from fastasr.corpus.bounds import MAX_LINE_BYTES, MAX_RECORDING_SECONDS, bounded_lines, open_regular
from fastasr.errors import UserError

AUDIO_EXTENSIONS = (".opus", ".wav", ".flac")
# Other files libsndfile decodes (a manifest may name them): their samples are stored as FLAC/WAV (segments.py).
DECODED_EXTENSIONS = (".mp3", ".ogg", ".oga", ".aiff", ".aif")

@dataclass(frozen=True, slots=True)
class Row:
    """One input row. `source` is the audio path relative to the corpus root (the transcript's when there is no
    audio), `audio`/`text_path` are absolute or None, `text` is an inline transcript (manifests) or None.

    `offset`/`length` (seconds) make the row a segment of its audio; `channel` picks one channel of a multi-channel
    recording (None: all of them, downmixed by the loader as for a whole file); `speaker` feeds `--group-by`."""

    source: str
    audio: str | None
    text_path: str | None = None
    text: str | None = None
    reject: str | None = None  # a reason already known when reading the listing
    detail: str = ""
    offset: float | None = None
    length: float | None = None
    channel: int | None = None
    speaker: str | None = None

    @property
    def is_segment(self) -> bool:
        return self.offset is not None

    @property
    def end(self) -> float:
        """End of the span in the recording, s (inf: to the end of the file)."""
        if self.offset is None or self.length is None:
            return math.inf
        return self.offset + self.length

    @property
    def key(self) -> str:
        if self.offset is None:
            return make_key(self.source)
        end = "end" if self.length is None else f"{round(self.end * 1000):08d}"
        channel = "" if self.channel is None else f"-c{self.channel}"
        return f"{make_key(self.source)}_{round(self.offset * 1000):08d}-{end}{channel}"

    @property
    def label(self) -> str:
        """How rejected.tsv names the row: the source, and for a segment its span."""
        if self.offset is None:
            return self.source
        end = "end" if self.length is None else f"{self.end:.3f}"
        channel = "" if self.channel is None else f" channel {self.channel}"
        return f"{self.source}@{self.offset:.3f}-{end}{channel}"


def make_key(source: str) -> str:
    """KEY of a sample: the source path without its extension, '.' in the last component escaped.

    WebDataset splits key from extension at the first dot of the basename, so `a/b.c.opus` must become `a/b%2Ec`;
    '%' itself is escaped first so the mapping stays one-to-one. A segment's key adds its span in milliseconds:
    `a/b_00001500-00003000` (see Row.key), the same whichever manifest named it.
    """
    dot, slash = source.rfind("."), source.rfind("/")
    stem = source[slash + 1 : dot]
    if (dot > slash != 0 and stem and "%" not in stem and "." not in stem
            and source[dot:].lower() in _KEYED_EXTENSIONS):
        return source[:dot]  # the usual path: nothing to escape (what the lines below give, without their cost)
    stem, ext = os.path.splitext(source)
    if ext.lower() not in _KEYED_EXTENSIONS:
        stem = source
    head, _, base = stem.rpartition("/")
    base = base.replace("%", "%25").replace(".", "%2E")
    return f"{head}/{base}" if head else base


_KEYED_EXTENSIONS = frozenset(AUDIO_EXTENSIONS + DECODED_EXTENSIONS + (".txt",))


def span_row(source: str, audio: str, offset, length, where: str, **fields) -> Row:
    """A segment row from a manifest's numbers, or the row rejected with why the span cannot exist (named by
    `where`, the manifest line, when the numbers are not numbers)."""
    try:
        offset, length = float(offset), None if length is None else float(length)
        numbers = math.isfinite(offset) and (length is None or math.isfinite(length))
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
        numbers = False
    if not numbers:
        return Row(where, None, reject="manifest_malformed", detail=f"{source}: offset {offset!r}, duration {length!r}")
    row = Row(source, audio, offset=offset, length=length, **fields)
    if offset < 0:
        return replace(row, reject="segment_out_of_range", detail=f"starts at {offset} s, before the audio")
    if length is not None and length <= 0:
        return replace(row, reject="segment_empty", detail=f"duration {length} s")
    return beyond_any_recording(row, where)


def beyond_any_recording(row: Row, where: str) -> Row:
    """The row, or when its span ends after MAX_RECORDING_SECONDS (its key's milliseconds would overflow; no
    recording is that long) a segment_out_of_range row named by `where`, the manifest line."""
    end = row.offset if row.length is None else row.end
    if end is not None and end > MAX_RECORDING_SECONDS:
        return Row(where, None, reject="segment_out_of_range",
                   detail=f"{row.source}: ends at {end:g} s, after any recording ({MAX_RECORDING_SECONDS:g} s)")
    return row


def manifest_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, text, problem) of each non-blank line of a manifest, gzip-compressed or not (told by its first
    bytes). A line that cannot be read — not UTF-8, or longer than MAX_LINE_BYTES (corpus.bounds) — comes with
    text "" and the problem, which the reader rejects as that row; the lines after it are read on. A file that
    cannot be read at all (a broken gzip stream, not a regular file) is a UserError naming it."""
    try:
        fd = open_regular(str(path))
    except OSError as err:
        raise UserError(f"manifest {path} cannot be read: {err}") from None
    with open(fd, "rb") as raw_file:
        gz = raw_file.read(2) == b"\x1f\x8b"
        raw_file.seek(0)
        try:
            with (gzip.open(raw_file, "rb") if gz else raw_file) as f:
                for lineno, raw in enumerate(bounded_lines(f), 1):
                    if raw is None:
                        yield lineno, "", f"line longer than {MAX_LINE_BYTES} bytes"
                        continue
                    try:
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError:
                        yield lineno, "", "not UTF-8"
                        continue
                    if line.strip():
                        yield lineno, line, ""
        except (OSError, EOFError) as err:
            raise UserError(f"manifest {path} cannot be read: {err}") from None


def json_record(line: str) -> tuple[object, str]:
    """(the parsed line, "") or (None, why not): bad JSON, a number beyond Python's int digits limit, nesting deeper
    than the parser's recursion allows — each a malformed row, never a traceback."""
    try:
        return json.loads(line), ""
    except ValueError as err:  # JSONDecodeError, and the int-digits limit
        return None, f"{type(err).__name__}: {err}"[:300]
    except RecursionError:
        return None, "JSON nested too deeply"


def malformed(path: Path, lineno: int, detail: str, reason: str = "manifest_malformed") -> Row:
    return Row(source=f"{path.name}:{lineno}", audio=None, reject=reason, detail=detail)


def resolve(p: str, root: Path) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def resolve_str(p: str, root: Path) -> str:
    """str(resolve(p, root)), without pathlib for the usual plain relative path (16.5 M manifest rows)."""
    if _plain(p):
        base = str(root)
        return p if base == "." else f"{base}/{p}" if base != "/" else f"/{p}"
    return str(resolve(p, root))


def relative(p: str, root: Path) -> str:
    """Path relative to the corpus root; an absolute path outside it keeps its full path minus the leading '/'."""
    if _plain(p):  # root/p normalised is root + p: p itself
        return p
    path = Path(os.path.abspath(resolve(p, root)))
    try:
        return path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(*path.parts[1:]).as_posix()


def _plain(p: str) -> bool:
    """A relative path that pathlib and os.path.normpath leave as it is: no empty, '.' or '..' components."""
    if not p or p[0] == "/" or p[-1] == "/" or "//" in p:
        return False
    framed = f"/{p}/"
    return "/./" not in framed and "/../" not in framed


def outside_keys_relative(rows: Sequence[Row]) -> Sequence[Row]:
    """Rows whose audio lies outside the corpus root by an absolute path (a NeMo manifest's usual
    `/home/USER/data/...`) are keyed by their full path (`relative`); give them instead the path from the common
    directory of all such audio files, so that no machine's directory layout reaches the shards and reports.
    `rows` is a list or a corpus.listing.Listing (which finds them without building every row); a new one of the
    same type when any row moves."""
    outside = (rows.outside_rows() if hasattr(rows, "outside_rows")
               else [i for i, r in enumerate(rows) if keyed_by_full_path(r)])
    if not outside:
        return rows
    common = None
    for i in outside:
        d = os.path.dirname(os.path.abspath(rows[i].audio))
        common = d if common is None else os.path.commonpath([common, d])
    moved, outside = type(rows)(), set(outside)
    for i, r in enumerate(rows):
        moved.append(replace(r, source=Path(os.path.relpath(os.path.abspath(r.audio), common)).as_posix())
                     if i in outside else r)
    return moved


def keyed_by_full_path(r: Row) -> bool:
    """Keyed by its full absolute path (`relative` of a path outside the root)."""
    return bool(r.audio) and os.path.isabs(r.audio) and os.path.abspath(r.audio).lstrip("/") == r.source
