"""Corpus readers: what SOURCE is, and the directory walk, Open STT CSV and NeMo JSONL readers, all yielding `Row`.

A `Row` is one input row, before anything is read from disk. Checking it (does the audio exist, is the transcript
UTF-8, …) is the shard writer's job, so that every row — good or bad — is accounted for in one place. Readers only
reject what cannot become a row at all (a malformed manifest line, a span that cannot exist), as `Row(reject=…)`.
Lhotse manifests and Kaldi data dirs have their own modules (lhotse_manifest.py, kaldi_dir.py).

A row with an `offset` is a segment: the span [offset, offset + length) of its audio file (length None: to the end),
a sample of its own (segment.py cuts it out). Relative audio paths in a manifest are relative to the folder that
holds the manifest, or to SOURCE when `--manifest` names the manifest.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from fastasr.errors import UserError

log = logging.getLogger("fastasr.shard")

AUDIO_EXTENSIONS = (".opus", ".wav", ".flac")
# Other files libsndfile decodes (a manifest may name them): their samples are stored as FLAC/WAV (segment.py).
DECODED_EXTENSIONS = (".mp3", ".ogg", ".oga", ".aiff", ".aif")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
FORMATS = ("a corpus directory, a Kaldi data dir (wav.scp + text), an Open STT .csv, a NeMo .jsonl, "
           "a Lhotse cuts / supervisions / recordings .jsonl[.gz]")


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
    stem, ext = os.path.splitext(source)
    if ext.lower() not in AUDIO_EXTENSIONS + DECODED_EXTENSIONS + (".txt",):
        stem = source
    head, _, base = stem.rpartition("/")
    base = base.replace("%", "%25").replace(".", "%2E")
    return f"{head}/{base}" if head else base


def span_row(source: str, audio: str, offset, length, where: str, **fields) -> Row:
    """A segment row from a manifest's numbers, or the row rejected with why the span cannot exist (named by
    `where`, the manifest line, when the numbers are not numbers)."""
    try:
        offset, length = float(offset), None if length is None else float(length)
        numbers = math.isfinite(offset) and (length is None or math.isfinite(length))
    except (TypeError, ValueError):
        numbers = False
    if not numbers:
        return Row(where, None, reject="manifest_malformed", detail=f"{source}: offset {offset!r}, duration {length!r}")
    row = Row(source, audio, offset=offset, length=length, **fields)
    if offset < 0:
        return replace(row, reject="segment_out_of_range", detail=f"starts at {offset} s, before the audio")
    if length is not None and length <= 0:
        return replace(row, reject="segment_empty", detail=f"duration {length} s")
    return row


def read_source(source: str | Path, manifest: str | Path | None = None) -> tuple[Path, Iterator[Row]]:
    """(corpus root, rows) for SOURCE: a directory to walk, a Kaldi data dir, a manifest file, or a directory plus
    `--manifest`. Raises UserError when SOURCE or the manifest is not one of them."""
    source = Path(source)
    if manifest is not None:
        manifest = Path(manifest)
        if not source.is_dir():
            raise UserError(f"SOURCE {source} is not a directory (with --manifest, SOURCE is the folder the "
                            f"manifest's paths are relative to)")
        return source, read_manifest(manifest, source)
    if source.is_dir():
        if (source / "wav.scp").is_file():
            return source, read_manifest(source, source)
        return source, walk_directory(source)
    if source.is_file() and source.name.lower().endswith(MANIFEST_SUFFIXES):
        return source.parent, read_manifest(source, source.parent)
    what = "does not exist" if not source.exists() else "is not a known kind of source"
    raise UserError(f"SOURCE {source} {what}; expected {FORMATS}")


def read_manifest(path: Path, root: Path) -> Iterator[Row]:
    """The rows of one manifest (a file, or a Kaldi data dir), its kind told by its name and first record."""
    from fastasr.kaldi_dir import read_kaldi_dir
    from fastasr import lhotse_manifest

    if path.is_dir():
        missing = [name for name in ("wav.scp", "text") if not (path / name).is_file()]
        if missing:
            raise UserError(f"{path} is a directory without {' and '.join(missing)}: not a Kaldi data dir")
        return read_kaldi_dir(path, root)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist; expected {FORMATS}")
    if path.name.lower().endswith(".csv"):
        return read_csv_manifest(path, root)
    kind = sniff_jsonl(path)
    if kind == "nemo":
        return read_jsonl_manifest(path, root)
    return lhotse_manifest.read(path, root, kind)


def manifest_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each non-blank line of a manifest, gzip-compressed or not (told by its first bytes);
    text is None for a line that is not UTF-8, which the reader rejects as that row. A file that cannot be read
    at all (a broken gzip stream) is a UserError naming it."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError:
                    yield lineno, None
                    continue
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError) as err:
        raise UserError(f"manifest {path} cannot be read: {err}") from None


def sniff_jsonl(path: Path) -> str:
    """'nemo', 'cuts', 'supervisions' or 'recordings', from the first record that parses.

    A file where nothing parses is read as NeMo, so that each of its lines is accounted for as malformed."""
    for _, line in manifest_lines(path):
        try:
            obj = json.loads(line or "")
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return _kind_of(obj, path)
    return "nemo"


def _kind_of(obj: dict, path: Path) -> str:
    if "audio_filepath" in obj:
        return "nemo"
    if str(obj.get("type", "")).endswith("Cut") or {"recording", "supervisions"} & obj.keys():
        return "cuts"
    if {"recording_id", "start"} <= obj.keys():
        return "supervisions"
    if {"sources", "sampling_rate"} <= obj.keys():
        return "recordings"
    raise UserError(f"manifest {path}: a record with fields {sorted(obj)[:8]} is neither NeMo (audio_filepath, "
                    f"text) nor Lhotse (cuts, supervisions, recordings)")


def walk_directory(root: Path) -> Iterator[Row]:
    """Every audio file with the .txt of the same stem; a lone .txt or a lone audio file is a row too (rejected
    later as audio_missing / transcript_missing). Sorted, so the listing does not depend on the file system.

    Symlinked directories are followed (corpora are often assembled from links); each real directory is listed
    once, under the first path that reaches it in sorted order, so a link back up the tree cannot loop and a
    second link to the same data cannot list it twice (the skipped path is logged)."""
    root = Path(root)
    audio: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    listed: dict[tuple[int, int], str] = {}  # (device, inode) of each directory walked → its path
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        first = listed.setdefault((st.st_dev, st.st_ino), dirpath)
        if first != dirpath:
            log.warning("%s is the directory %s again (a symbolic link): listed once, under the first path",
                        dirpath, first)
            dirnames.clear()
            continue
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in AUDIO_EXTENSIONS:
                audio.setdefault(rel_dir + stem, []).append(rel_dir + name)
            elif ext == ".txt":
                texts.setdefault(rel_dir + stem, rel_dir + name)  # a.TXT beside a.txt: the first in sort order
    for stem in sorted(audio.keys() | texts.keys()):
        txt = texts.get(stem)
        text_path = str(root / txt) if txt else None
        if stem not in audio:
            yield Row(source=txt, audio=None, text_path=text_path)
            continue
        for rel in sorted(audio[stem]):
            yield Row(source=rel, audio=str(root / rel), text_path=text_path)


def read_csv_manifest(path: Path, root: Path) -> Iterator[Row]:
    """Open STT manifests: headerless `audio_path,text_path,duration`, paths relative to the corpus root."""
    try:
        yield from _csv_rows(path, root)
    except UnicodeDecodeError as err:
        raise UserError(f"manifest {path} is not UTF-8 ({err})") from None


def _csv_rows(path: Path, root: Path) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, fields in enumerate(csv.reader(f), 1):
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < 2 or not fields[0].strip():
                yield malformed(path, lineno, f"expected audio_path,text_path,duration; got {fields!r}")
                continue
            audio, text_path = fields[0].strip(), fields[1].strip()
            yield Row(
                source=relative(audio, root),
                audio=str(resolve(audio, root)),
                text_path=str(resolve(text_path, root)) if text_path else None,
            )


def read_jsonl_manifest(path: Path, root: Path) -> Iterator[Row]:
    """NeMo manifests: one JSON object per line with `audio_filepath`, `text`, `duration`, optionally `offset` and
    `speaker`. Without `offset` the row is the whole file and `duration` is not trusted (it is measured from the
    audio); with `offset` it is the segment [offset, offset + duration) — to the end when `duration` is absent."""
    for lineno, line in manifest_lines(path):
        if line is None:
            yield malformed(path, lineno, "not UTF-8")
            continue
        try:
            obj = json.loads(line)
            audio = obj["audio_filepath"]
            if not isinstance(audio, str) or not audio:
                raise KeyError("audio_filepath")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            yield malformed(path, lineno, f"{type(err).__name__}: {err}")
            continue
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            yield malformed(path, lineno, f"text is a {type(text).__name__}, not a string")
            continue
        speaker = obj.get("speaker")
        fields = dict(
            text=text,
            # a row with no "text" field falls back to the .txt beside the audio, like the directory walk
            text_path=str(resolve(os.path.splitext(audio)[0] + ".txt", root)) if text is None else None,
            speaker=None if speaker is None else str(speaker),
        )
        source, audio_path = relative(audio, root), str(resolve(audio, root))
        if obj.get("offset") is None:
            yield Row(source, audio_path, **fields)
        else:
            yield span_row(source, audio_path, obj["offset"], obj.get("duration"), f"{path.name}:{lineno}",
                           **fields)


def malformed(path: Path, lineno: int, detail: str, reason: str = "manifest_malformed") -> Row:
    return Row(source=f"{path.name}:{lineno}", audio=None, reject=reason, detail=detail)


def resolve(p: str, root: Path) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def relative(p: str, root: Path) -> str:
    """Path relative to the corpus root; an absolute path outside it keeps its full path minus the leading '/'."""
    path = Path(os.path.abspath(resolve(p, root)))
    try:
        return path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(*path.parts[1:]).as_posix()
