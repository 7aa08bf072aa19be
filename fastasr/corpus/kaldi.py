"""Kaldi data dirs: `wav.scp` and `text`, with `segments` and `utt2spk` when present.

Without `segments` every recording of wav.scp is an utterance (utterance id = recording id); with it every line of
`segments` (`utt reco start end`, end -1: to the end of the file) is a segment of its recording. The rows are the
utterance ids found in `text` or in `segments` / `wav.scp`, sorted; an id missing from one side is a row rejected
as `audio_missing` or `transcript_missing`. Pipe commands in wav.scp (`sox … |`) and archive offsets (`x.ark:12`)
are not run or read: their utterances are rejected as `manifest_unsupported` — convert them to files first (e.g.
with `wav-copy` or sox). Relative paths are relative to the folder holding wav.scp, or to SOURCE with `--manifest`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from fastasr.corpus.rows import Row, malformed, manifest_lines, relative, resolve_str, span_row

_ARCHIVE = re.compile(r"\.(ark|scp):\d+$")


def read_table(path: Path, fields: int) -> tuple[dict[str, list[str]], list[Row]]:
    """{first column: the other columns} of a Kaldi table, and a rejected row for each line that cannot be one.

    `fields` is the count of columns after the id; the last one takes the rest of the line (a transcript, a path
    with spaces) when fields == 1."""
    table, bad = {}, []
    for lineno, line, problem in manifest_lines(path):
        if problem:
            bad.append(malformed(path, lineno, problem))
            continue
        parts = line.split(maxsplit=1) if fields == 1 else line.split()
        rest = [x.strip() for x in parts[1:]] if fields > 1 else ([parts[1].strip()] if len(parts) > 1 else [""])
        if len(rest) != fields:
            bad.append(malformed(path, lineno, f"expected {fields + 1} fields, got {line.strip()[:80]!r}"))
        elif parts[0] in table:
            bad.append(malformed(path, lineno, f"id {parts[0]!r} repeated"))
        else:
            table[parts[0]] = rest
    return table, bad


def read_kaldi_dir(data_dir: Path, root: Path) -> Iterator[Row]:
    wav, bad = read_table(data_dir / "wav.scp", 1)
    texts, bad_text = read_table(data_dir / "text", 1)
    bad += bad_text
    segments, bad_seg = ({}, []) if not (data_dir / "segments").is_file() else read_table(data_dir / "segments", 3)
    bad += bad_seg
    speakers, _ = ({}, []) if not (data_dir / "utt2spk").is_file() else read_table(data_dir / "utt2spk", 1)
    yield from bad
    has_segments = (data_dir / "segments").is_file()
    utts = sorted(texts.keys() | (segments.keys() if has_segments else wav.keys()))
    for utt in utts:
        reco, span = (segments[utt][0], segments[utt][1:]) if utt in segments else (utt, None)
        if has_segments and span is None:
            yield Row(f"text:{utt}", None, reject="audio_missing", detail=f"utterance {utt} is not in segments")
            continue
        if reco not in wav:
            yield Row(f"text:{utt}", None, reject="audio_missing", detail=f"recording {reco} is not in wav.scp")
            continue
        path = wav[reco][0].strip()
        if path.endswith("|") or _ARCHIVE.search(path):
            yield Row(f"wav.scp:{reco}" + (f" ({utt})" if utt != reco else ""), None, reject="manifest_unsupported",
                      detail=f"{path[:80]!r}: pipes and archives are not read, convert them to files")
            continue
        fields = dict(text=texts[utt][0] if utt in texts else None, speaker=speakers.get(utt, [None])[0])
        source, audio = relative(path, root), resolve_str(path, root)
        if span is None:
            row = Row(source, audio, **fields)
        else:
            start, end = span
            try:
                length = None if float(end) == -1 else float(end) - float(start)
            except ValueError:
                length = end  # span_row rejects it as malformed
            row = span_row(source, audio, start, length, f"segments:{utt}", **fields)
        if not row.reject and utt not in texts:
            row = replace(row, reject="transcript_missing", detail=f"utterance {utt} is not in text")
        yield row
