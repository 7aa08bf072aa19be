"""What `fastasr transcribe` takes as AUDIO, as speech teams hand audio over: files, directories, lists, manifests.

Each argument is one of
- a directory: its audio files (AUDIO_EXTENSIONS and .ogg), recursively, in sorted order;
- `-`: paths read from stdin, one per line; `@FILE`: paths read from FILE, one per line (blank lines and lines
  starting with # skipped; relative paths as given, from the working directory, as `find` prints them);
- a NeMo manifest (`.json` / `.jsonl`, one JSON object per line with `audio_filepath`; relative paths from the
  manifest's directory, as NeMo resolves them);
- a Kaldi `wav.scp` (any `*.scp`: `utterance-id path` per line; a command ending in `|` or an `ark:` offset is
  refused, as fastasr runs no commands from a list);
- else an audio file.
Each becomes an Input: the id printed beside its text (the utterance id for wav.scp, the path otherwise) and the
path to read. A list that names nothing, or a line that is not what its kind needs, is a UserError naming the
file and line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

from fastasr.corpus.rows import AUDIO_EXTENSIONS
from fastasr.errors import UserError

INPUT_EXTENSIONS = (*AUDIO_EXTENSIONS, ".ogg")
MANIFEST_SUFFIXES = (".json", ".jsonl")
MAX_LIST_LINE = 1 << 16  # a path or a manifest line longer than 64 KiB is not one


class Input(NamedTuple):
    id: str  # what the output names it by
    path: str  # the audio file


def _lines(path: str, stream) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(stream, 1):
        if len(line) > MAX_LIST_LINE:
            raise UserError(f"{path}:{n}: a line of more than {MAX_LIST_LINE} characters; not a list of paths")
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


def _open(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None


def _manifest(path: str) -> list[Input]:
    base = Path(path).parent
    out = []
    with _open(path) as f:
        for n, line in _lines(path, f):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not a JSON line of a NeMo manifest ({exc.msg})") from None
            audio = record.get("audio_filepath") if isinstance(record, dict) else None
            if not isinstance(audio, str) or not audio:
                raise UserError(f"{path}:{n}: a NeMo manifest line needs an \"audio_filepath\"")
            full = audio if os.path.isabs(audio) else str(base / audio)
            out.append(Input(full, full))
    return out


def _wav_scp(path: str) -> list[Input]:
    out = []
    with _open(path) as f:
        for n, line in _lines(path, f):
            utt, _, where = line.partition(" ")
            where = where.strip()
            if not where:
                raise UserError(f"{path}:{n}: a wav.scp line is `utterance-id path`, got {line[:80]!r}")
            if where.endswith("|") or where.startswith("ark:") or ".ark:" in where:
                raise UserError(f"{path}:{n}: {utt} is read by a command or from an archive ({where[:80]!r}); "
                                "fastasr reads audio files only: extract them first (e.g. `wav-copy`)")
            out.append(Input(utt, where))
    return out


def _directory(path: str) -> list[Input]:
    found = sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() in INPUT_EXTENSIONS and p.is_file())
    if not found:
        raise UserError(f"{path}: a directory with no audio files ({', '.join(INPUT_EXTENSIONS)}) under it")
    return [Input(p, p) for p in found]


def audio_inputs(items: list[str], stdin=None) -> list[Input]:
    """The inputs that the AUDIO arguments name, in order (see the module's docstring)."""
    out: list[Input] = []
    for item in items:
        if item == "-":
            out += [Input(p, p) for _, p in _lines("stdin", stdin if stdin is not None else sys.stdin)]
        elif item.startswith("@") and len(item) > 1:
            with _open(item[1:]) as f:
                listed = [Input(p, p) for _, p in _lines(item[1:], f)]
            if not listed:
                raise UserError(f"{item}: the list names no files")
            out += listed
        elif os.path.isdir(item):
            out += _directory(item)
        elif item.lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(item):
            out += _manifest(item)
        elif item.lower().endswith(".scp") and os.path.isfile(item):
            out += _wav_scp(item)
        else:
            out.append(Input(item, item))
    return out
