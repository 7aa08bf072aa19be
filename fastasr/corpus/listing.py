"""A corpus listing held compactly: every `Row` packed into one byte buffer, rebuilt when asked for.

At Open STT's 16.5 M rows a list of `Row` objects costs ~420 bytes a row (three path strings and the object), ~7 GB
before planning starts, in every `--part I/N` task of a job array. Almost every row is a whole file whose audio path
is a common prefix plus its source and whose transcript sits beside it with `.txt`: such a row is stored as a kind
byte, the number of its head (the prefix and the source's directory: Open STT has ~10^5 directories) and the file
name in UTF-8 (~20 bytes); any other row (segments, inline text, rejects, speakers) as the `marshal` of its fields.
`Listing[i]` gives back an equal `Row`; `keys()`, `label(i)` and `outside_rows()` answer what planning asks of every
row without building one.
"""

from __future__ import annotations

import marshal
from array import array
from operator import index as as_index
from typing import Iterable, Iterator

from fastasr.corpus.rows import Row, keyed_by_full_path, make_key

_WHOLE, _WHOLE_TXT, _ANY = 0, 1, 2  # kind bytes: audio = prefix + source (with TXT: transcript beside it), or any row
_MAX_HEADS = 1 << 24  # head numbers take 3 bytes


class Listing:
    """The rows of a corpus in listing order: `len`, `listing[i]` (any integer type) and iteration, like the list it
    replaces; `append` while reading."""

    def __init__(self, rows: Iterable[Row] = ()):
        self._buf = bytearray()
        self._ends = array("q")  # row i is _buf[_ends[i-1]:_ends[i]]
        self._heads: list[tuple[str, str]] = []  # (prefix, source directory): audio = prefix + directory/name
        self._head_ids: dict[tuple[str, str], int] = {}
        for row in rows:
            self.append(row)

    def append(self, row: Row) -> None:
        self._buf += self._encode(row)
        self._ends.append(len(self._buf))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i) -> Row:
        start, end = self._span(i)
        return self._decode(start, end)

    def __iter__(self) -> Iterator[Row]:
        start = 0
        for end in self._ends:
            yield self._decode(start, end)
            start = end

    def label(self, i) -> str:
        """rows[i].label (the source of a whole file)."""
        start, end = self._span(i)
        if self._buf[start] == _ANY:
            return self._decode(start, end).label
        return self._source(start, end)

    def keys(self) -> Iterator[tuple[str | None, bool]]:
        """(key, is a segment) of every row in order; key None for a row the reader rejected."""
        buf, start = self._buf, 0
        for end in self._ends:
            if buf[start] == _ANY:
                row = self._decode(start, end)
                yield (None if row.reject else row.key), row.is_segment
            else:
                yield make_key(self._source(start, end)), False
            start = end

    def outside_rows(self) -> list[int]:
        """The rows keyed by their full absolute path (rows.keyed_by_full_path), judged once per head for whole files
        (a file name is not '.' or '..', so it does not change what its directory normalises to)."""
        out, verdict, buf, start = [], {}, self._buf, 0
        for i, end in enumerate(self._ends):
            if buf[start] == _ANY:
                if keyed_by_full_path(self._decode(start, end)):
                    out.append(i)
            else:
                head = buf[start + 1] | buf[start + 2] << 8 | buf[start + 3] << 16
                if head not in verdict:
                    prefix, folder = self._heads[head]
                    source = f"{folder}/name" if folder else "name"
                    verdict[head] = keyed_by_full_path(Row(source, prefix + source))
                if verdict[head]:
                    out.append(i)
            start = end
        return out

    def nbytes(self) -> int:
        """The buffer and offsets held (the heads aside): what the listing costs in memory."""
        return len(self._buf) + self._ends.itemsize * len(self._ends)

    def _span(self, i) -> tuple[int, int]:
        i = as_index(i)
        n = len(self._ends)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of a listing of {n}")
        return (self._ends[i - 1] if i else 0), self._ends[i]

    def _encode(self, row: Row) -> bytes:
        audio, source = row.audio, row.source
        plain = (audio is not None and row.text is None and row.reject is None and not row.detail
                 and row.offset is None and row.length is None and row.channel is None and row.speaker is None
                 and audio.endswith(source) and len(source) > 0)
        if plain:
            kind = _WHOLE if row.text_path is None else _WHOLE_TXT if row.text_path == _txt_beside(audio) else None
            folder, slash, name = source.rpartition("/")
            head = (audio[: len(audio) - len(source)], folder)
            hid = self._head_ids.get(head)
            if hid is None and len(self._heads) < _MAX_HEADS and name not in ("", ".", "..") and (folder or not slash):
                hid = self._head_ids[head] = len(self._heads)
                self._heads.append(head)
            if kind is not None and hid is not None:
                return bytes((kind, hid & 0xFF, hid >> 8 & 0xFF, hid >> 16)) + name.encode("utf-8", "surrogatepass")
        fields = (row.source, row.audio, row.text_path, row.text, row.reject, row.detail, row.offset, row.length,
                  row.channel, row.speaker)
        return bytes((_ANY,)) + marshal.dumps(fields)

    def _source(self, start: int, end: int) -> str:
        buf = self._buf
        folder = self._heads[buf[start + 1] | buf[start + 2] << 8 | buf[start + 3] << 16][1]
        name = buf[start + 4 : end].decode("utf-8", "surrogatepass")
        return f"{folder}/{name}" if folder else name

    def _decode(self, start: int, end: int) -> Row:
        buf = self._buf
        kind = buf[start]
        if kind == _ANY:
            return Row(*marshal.loads(buf[start + 1 : end]))
        prefix, folder = self._heads[buf[start + 1] | buf[start + 2] << 8 | buf[start + 3] << 16]
        name = buf[start + 4 : end].decode("utf-8", "surrogatepass")
        source = f"{folder}/{name}" if folder else name
        audio = prefix + source
        return Row(source, audio, _txt_beside(audio) if kind == _WHOLE_TXT else None)


def _txt_beside(audio: str) -> str:
    """os.path.splitext(audio)[0] + ".txt" without its per-character loop: the extension starts at the last dot of
    the file name unless only dots come before it."""
    dot, slash = audio.rfind("."), audio.rfind("/")
    return (audio[:dot] if dot > slash and audio[slash + 1 : dot].lstrip(".") else audio) + ".txt"
