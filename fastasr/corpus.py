"""Corpus readers: a directory walk, Open STT CSV manifests and NeMo JSONL manifests, all yielding `Row`.

A `Row` is one input row, before anything is read from disk. Checking it (does the audio exist, is the transcript
UTF-8, …) is the shard writer's job, so that every row — good or bad — is accounted for in one place. Readers only
reject what cannot become a row at all (a malformed manifest line), as `Row(reject=…)`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger("fastasr.shard")

AUDIO_EXTENSIONS = (".opus", ".wav", ".flac")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".json")


@dataclass(frozen=True, slots=True)
class Row:
    """One input row. `source` is the audio path relative to the corpus root (the transcript's when there is no
    audio), `audio`/`text_path` are absolute or None, `text` is an inline transcript (JSONL) or None."""

    source: str
    audio: str | None
    text_path: str | None = None
    text: str | None = None
    reject: str | None = None  # a reason already known when reading the listing
    detail: str = ""

    @property
    def key(self) -> str:
        return make_key(self.source)


def make_key(source: str) -> str:
    """KEY of a sample: the source path without its extension, '.' in the last component escaped.

    WebDataset splits key from extension at the first dot of the basename, so `a/b.c.opus` must become `a/b%2Ec`;
    '%' itself is escaped first so the mapping stays one-to-one.
    """
    stem, ext = os.path.splitext(source)
    if ext.lower() not in AUDIO_EXTENSIONS + (".txt",):
        stem = source
    head, _, base = stem.rpartition("/")
    base = base.replace("%", "%25").replace(".", "%2E")
    return f"{head}/{base}" if head else base


def read_source(source: str | Path, manifest: str | Path | None = None) -> tuple[Path, Iterator[Row]]:
    """(corpus root, rows) for SOURCE: a directory to walk, a manifest file, or a directory plus `--manifest`."""
    source = Path(source)
    if manifest is not None:
        manifest = Path(manifest)
        if not source.is_dir():
            raise FileNotFoundError(f"SOURCE {source} is not a directory (manifest paths are relative to it)")
        return source, read_manifest(manifest, source)
    if source.is_file() and source.suffix.lower() in MANIFEST_EXTENSIONS:
        return source.parent, read_manifest(source, source.parent)
    if source.is_dir():
        return source, walk_directory(source)
    raise FileNotFoundError(f"SOURCE {source} is neither a directory nor a .csv/.jsonl manifest")


def read_manifest(path: Path, root: Path) -> Iterator[Row]:
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    if path.suffix.lower() == ".csv":
        return read_csv_manifest(path, root)
    return read_jsonl_manifest(path, root)


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
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, fields in enumerate(csv.reader(f), 1):
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < 2 or not fields[0].strip():
                yield _malformed(path, lineno, f"expected audio_path,text_path,duration; got {fields!r}")
                continue
            audio, text_path = fields[0].strip(), fields[1].strip()
            yield Row(
                source=_relative(audio, root),
                audio=str(_resolve(audio, root)),
                text_path=str(_resolve(text_path, root)) if text_path else None,
            )


def read_jsonl_manifest(path: Path, root: Path) -> Iterator[Row]:
    """NeMo manifests: one JSON object per line with `audio_filepath`, `text` (and `duration`, which is not trusted:
    the duration is measured from the audio)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                audio = obj["audio_filepath"]
                if not isinstance(audio, str) or not audio:
                    raise KeyError("audio_filepath")
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                yield _malformed(path, lineno, f"{type(err).__name__}: {err}")
                continue
            text = obj.get("text")
            if text is not None and not isinstance(text, str):
                yield _malformed(path, lineno, f"text is a {type(text).__name__}, not a string")
                continue
            yield Row(
                source=_relative(audio, root),
                audio=str(_resolve(audio, root)),
                text=text,
                # a row with no "text" field falls back to the .txt beside the audio, like the directory walk
                text_path=str(_resolve(os.path.splitext(audio)[0] + ".txt", root)) if text is None else None,
            )


def _malformed(path: Path, lineno: int, detail: str) -> Row:
    return Row(source=f"{path.name}:{lineno}", audio=None, reject="manifest_malformed", detail=detail)


def _resolve(p: str, root: Path) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def _relative(p: str, root: Path) -> str:
    """Path relative to the corpus root; an absolute path outside it keeps its full path minus the leading '/'."""
    path = Path(os.path.abspath(_resolve(p, root)))
    try:
        return path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(*path.parts[1:]).as_posix()
