"""Corpus readers: what SOURCE is, and the directory walk, Open STT CSV and NeMo JSONL readers, all yielding `Row`.

`Row` and the helpers the readers share are in rows.py; Lhotse manifests and Kaldi data dirs have their own
modules (lhotse.py, kaldi.py). Relative audio paths in a manifest are relative to the folder that
holds the manifest, or to SOURCE when `--manifest` names the manifest.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Iterator

from fastasr.corpus.bounds import MAX_LINE_BYTES, bounded_lines, open_regular
from fastasr.corpus.rows import (AUDIO_EXTENSIONS, Row, json_record, malformed, manifest_lines, relative, resolve_str,
                                 span_row)
from fastasr.errors import UserError

log = logging.getLogger("fastasr.shard")

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
FORMATS = ("a corpus directory, a Kaldi data dir (wav.scp + text), an Open STT .csv, a NeMo .jsonl, "
           "a Lhotse cuts / supervisions / recordings .jsonl[.gz]")


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
    from fastasr.corpus import lhotse as lhotse_manifest
    from fastasr.corpus.kaldi import read_kaldi_dir

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


def sniff_jsonl(path: Path) -> str:
    """'nemo', 'cuts', 'supervisions' or 'recordings', from the first record that parses.

    A file where nothing parses is read as NeMo, so that each of its lines is accounted for as malformed."""
    for _, line, _problem in manifest_lines(path):
        obj, _why = json_record(line)
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
    too_long: list[None] = []  # lines bounded_lines gave up on, each read by csv as a blank line

    def lines(f) -> Iterator[str]:
        for line in bounded_lines(f, ends=("\n", "\r")):
            if line is None:
                too_long.append(None)
            yield "\n" if line is None else line

    try:
        fd = open_regular(str(path))
    except OSError as err:
        raise UserError(f"manifest {path} cannot be read: {err}") from None
    with open(fd, newline="", encoding="utf-8") as f:
        reader, lineno = csv.reader(lines(f)), 0
        while True:
            lineno += 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # a field over csv's size limit, a stray quote
                yield malformed(path, lineno, f"csv: {err}")
                continue
            if not fields and too_long:
                too_long.pop()
                yield malformed(path, lineno, f"line longer than {MAX_LINE_BYTES} characters")
                continue
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < 2 or not fields[0].strip():
                yield malformed(path, lineno, f"expected audio_path,text_path,duration; got {fields!r}")
                continue
            audio, text_path = fields[0].strip(), fields[1].strip()
            yield Row(
                source=relative(audio, root),
                audio=resolve_str(audio, root),
                text_path=resolve_str(text_path, root) if text_path else None,
            )


def read_jsonl_manifest(path: Path, root: Path) -> Iterator[Row]:
    """NeMo manifests: one JSON object per line with `audio_filepath`, `text`, `duration`, optionally `offset` and
    `speaker`. Without `offset` the row is the whole file and `duration` is not trusted (it is measured from the
    audio); with `offset` it is the segment [offset, offset + duration) — to the end when `duration` is absent."""
    for lineno, line, problem in manifest_lines(path):
        obj, problem = (None, problem) if problem else json_record(line)
        if problem:
            yield malformed(path, lineno, problem)
            continue
        try:
            audio = obj["audio_filepath"]
            if not isinstance(audio, str) or not audio:
                raise KeyError("audio_filepath")
        except (KeyError, TypeError) as err:
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
            text_path=resolve_str(os.path.splitext(audio)[0] + ".txt", root) if text is None else None,
            speaker=None if speaker is None else str(speaker),
        )
        source, audio_path = relative(audio, root), resolve_str(audio, root)
        if obj.get("offset") is None:
            yield Row(source, audio_path, **fields)
        else:
            yield span_row(source, audio_path, obj["offset"], obj.get("duration"), f"{path.name}:{lineno}",
                           **fields)
