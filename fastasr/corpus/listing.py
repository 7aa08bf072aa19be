"""A corpus listing held compactly: every `Row` packed into one byte buffer, rebuilt when asked for.

At Open STT's 16.5 M rows a list of `Row` objects costs ~420 bytes a row (three path strings and the object), ~7 GB
before planning starts, in every `--part I/N` task of a job array. Almost every row is a whole file whose audio path
is a common prefix plus its source and whose transcript sits beside it with `.txt`: such a row is stored as a kind
byte, a prefix number and its source in UTF-8 (~45 bytes); any other row (segments, inline text, rejects, speakers)
as the `marshal` of its fields. `Listing[i]` gives back an equal `Row`.
"""

from __future__ import annotations

import marshal
import os
from array import array
from operator import index as as_index
from typing import Iterable, Iterator

from fastasr.corpus.rows import Row

_WHOLE, _WHOLE_TXT, _ANY = 0, 1, 2  # kind bytes: audio = prefix + source (with TXT: transcript beside it), or any row
_MAX_PREFIXES = 1 << 16


class Listing:
    """The rows of a corpus in listing order: `len`, `listing[i]` (any integer type) and iteration, like the list it
    replaces; `append` while reading."""

    def __init__(self, rows: Iterable[Row] = ()):
        self._buf = bytearray()
        self._ends = array("q")  # row i is _buf[_ends[i-1]:_ends[i]]
        self._prefixes: list[str] = []
        self._prefix_ids: dict[str, int] = {}
        for row in rows:
            self.append(row)

    def append(self, row: Row) -> None:
        self._buf += self._encode(row)
        self._ends.append(len(self._buf))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i) -> Row:
        i = as_index(i)
        n = len(self._ends)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of a listing of {n}")
        return self._decode(self._ends[i - 1] if i else 0, self._ends[i])

    def __iter__(self) -> Iterator[Row]:
        start = 0
        for end in self._ends:
            yield self._decode(start, end)
            start = end

    def nbytes(self) -> int:
        """The buffer and offsets held (the prefixes aside): what the listing costs in memory."""
        return len(self._buf) + self._ends.itemsize * len(self._ends)

    def _encode(self, row: Row) -> bytes:
        plain = (row.audio is not None and row.text is None and row.reject is None and not row.detail
                 and row.offset is None and row.length is None and row.channel is None and row.speaker is None
                 and row.audio.endswith(row.source) and len(row.source) > 0)
        if plain:
            txt = os.path.splitext(row.audio)[0] + ".txt"
            kind = _WHOLE if row.text_path is None else _WHOLE_TXT if row.text_path == txt else None
            prefix = row.audio[: len(row.audio) - len(row.source)]
            pid = self._prefix_ids.get(prefix)
            if pid is None and len(self._prefixes) < _MAX_PREFIXES:
                pid = self._prefix_ids[prefix] = len(self._prefixes)
                self._prefixes.append(prefix)
            if kind is not None and pid is not None:
                return bytes((kind, pid & 0xFF, pid >> 8)) + row.source.encode("utf-8", "surrogatepass")
        fields = (row.source, row.audio, row.text_path, row.text, row.reject, row.detail, row.offset, row.length,
                  row.channel, row.speaker)
        return bytes((_ANY,)) + marshal.dumps(fields)

    def _decode(self, start: int, end: int) -> Row:
        buf = self._buf
        kind = buf[start]
        if kind == _ANY:
            return Row(*marshal.loads(buf[start + 1 : end]))
        source = buf[start + 3 : end].decode("utf-8", "surrogatepass")
        audio = self._prefixes[buf[start + 1] | buf[start + 2] << 8] + source
        return Row(source, audio, os.path.splitext(audio)[0] + ".txt" if kind == _WHOLE_TXT else None)
