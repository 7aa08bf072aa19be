"""The plan of a build from its listing: the rows rejected before any file is opened, and every other row's split
and shard. Linear and lean at Open STT scale (16.5 M rows): arrays, not a dict or a string per row.

- A row the reader already rejected (a malformed line) is rejected as it stands.
- Duplicate keys: the first row of a key in listing order keeps it, every later one is `duplicate_key`. Found by
  sorting the keys, which the shard cut needs anyway. A key is its directory and its name (KEY = DIR/NAME): when
  no directory with keys is a prefix of another, key order is the order of (the directory's rank, the name), so
  the sort holds a 4-byte rank and the short name per row, not the whole key; else the whole keys are sorted. Each
  is held to at most `_SORT_BYTES` // rows bytes, and rows whose cut names tie are put in order by their full name.
  (UTF-8 bytes sort in code point order, the order Python sorts the strings in.)
- Overlapping segments of one recording (corpus.segments) are rejected next.
- Each kept row's split is the salted hash of its key, or of its `--group-by` group (corpus.grouping); each split's
  rows in key order are cut into shards of `shard_size` input rows (corpus.split).
Rejects come in listing order (malformed and duplicates), then the overlaps by row; the same plan, rejects and
group counts as a dict of keys and sorted lists of (key, row) pairs would give, for any listing.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from fastasr.corpus.checks import Reject
from fastasr.corpus.grouping import GroupRule, group_of, what_groups
from fastasr.corpus.rows import Row
from fastasr.corpus.segments import overlapping
from fastasr.corpus.split import SPLITS, ShardPlan, assign_split, split_codes, split_digest
from fastasr.errors import UserError
from fastasr.text.normalization import DEFAULT_TEXT, TextConfig

log = logging.getLogger("fastasr.shard")

_SORT_BYTES = 512 << 20  # the names' sort array at most (16.5 M rows: 32 bytes each, Open STT's are 12-17)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Plan:
    shards: list[ShardPlan]  # every split's shards, train then val then test; rows are arrays of row numbers
    pre_rejects: list[Reject]
    group_counts: dict[str, int]  # split → groups in it (rows without a group count one each)


def plan_rows(rows: Sequence[Row], seed: int, fractions: dict[str, float], shard_size: int,
              rule: GroupRule | None = None, text: TextConfig = DEFAULT_TEXT) -> Plan:
    n = len(rows)
    early: list[tuple[int, Reject]] = []  # (row, reject) in listing order
    usable = array("i" if n < 2**31 else "q")  # rows that get a key
    heads: dict[str, int] = {}  # a key's directory → its number, in order of appearance
    head_of = array("i")
    names, name_ends = bytearray(), array("q")
    digests, codes = bytearray(), []  # each usable row's split digest (no --group-by), as split codes per chunk
    segments = array("q")
    for i, (key, segment) in enumerate(_keys(rows)):
        if key is None:
            row = rows[i]
            early.append((i, Reject(row.label, row.reject, row.detail)))
            continue
        folder, _, name = key.rpartition("/")
        hid = heads.get(folder)
        if hid is None:
            hid = heads[folder] = len(heads)
        head_of.append(hid)
        names += name.encode("utf-8", "surrogatepass")
        name_ends.append(len(names))
        if rule is None:
            digests += split_digest(key, seed)
            if len(digests) >= 8 * _CHUNK:
                codes.append(split_codes(bytes(digests), fractions))
                digests.clear()
        usable.append(i)
        if segment:
            segments.append(i)
    if rule is None:
        codes.append(split_codes(bytes(digests), fractions))
        del digests
    usable_rows = np.frombuffer(usable, dtype=np.dtype(usable.typecode)) if len(usable) else np.zeros(0, np.int64)
    keys = _SortKeys(list(heads), np.frombuffer(head_of, np.int32) if len(head_of) else np.zeros(0, np.int32),
                     names, np.frombuffer(name_ends, np.int64) if len(name_ends) else np.zeros(0, np.int64))
    del heads, head_of, names, name_ends
    order, repeat = keys.sorted()
    del keys
    repeats = np.flatnonzero(repeat)
    if len(repeats):  # each duplicate's run of equal keys begins at the row that keeps the key
        first = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))[repeats]
    for pos, kept_at in zip(repeats.tolist(), first.tolist() if len(repeats) else []):
        dup, kept_by = rows[int(usable_rows[order[pos]])], rows[int(usable_rows[order[kept_at]])]
        early.append((int(usable_rows[order[pos]]),
                      Reject(dup.label, "duplicate_key", f"key {dup.key} already taken by {kept_by.label}")))
    early.sort(key=lambda x: x[0])
    pre_rejects = [r for _, r in early]

    by_key = usable_rows[order[~repeat]]  # every key once, in key order
    kept = np.zeros(n, dtype=bool)
    kept[by_key] = True
    overlaps = overlapping(rows, [i for i in segments if kept[i]])
    pre_rejects += [Reject(rows[i].label, "segment_overlap", overlaps[i]) for i in sorted(overlaps)]
    kept[list(overlaps)] = False

    if rule is None:
        split_of = np.full(n, -1, dtype=np.int8)
        split_of[usable_rows] = np.concatenate(codes)
        del codes
        counts = {s: int(c) for s, c in zip(SPLITS, np.bincount(split_of[kept], minlength=len(SPLITS)))}
    else:
        split_of, counts = _group_splits(rows, kept, seed, fractions, rule, text)
    by_key = by_key[kept[by_key]]
    shards = []
    for code, split in enumerate(SPLITS):
        mine = by_key[split_of[by_key] == code]
        shards += [ShardPlan(split, number, mine[start : start + shard_size])
                   for number, start in enumerate(range(0, len(mine), shard_size))]
    return Plan(shards, pre_rejects, counts)


def _keys(rows: Sequence[Row]) -> Iterator[tuple[str | None, bool]]:
    """(key, is a segment) per row, key None for a rejected row (a corpus.listing.Listing answers without building
    its rows)."""
    if hasattr(rows, "keys"):
        return rows.keys()
    return ((None if r.reject else r.key, r.is_segment) for r in rows)


@dataclass
class _SortKeys:
    """The keys of the usable rows as (directory number, name): `heads` in order of appearance, `head_of` per row,
    the names' UTF-8 end to end in `names` up to `ends`."""

    heads: list[str]
    head_of: np.ndarray
    names: bytearray
    ends: np.ndarray

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, repeat): the rows in key order, equal keys in listing order; repeat[p] when the key at sorted
        position p equals the one before it."""
        n = len(self.ends)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        rank = self._ranks()
        if rank is None:  # a directory with keys is a prefix of another: sort whole keys
            self.names, self.ends = self._whole_keys()
            rank = np.zeros(n, np.int32)
        lengths = np.diff(self.ends, prepend=0)
        width = int(min(lengths.max(initial=1), max(8, _SORT_BYTES // n)))
        long = lengths > width  # names the cut shortens
        del lengths
        cut = np.zeros(n, dtype=f"S{max(width, 1)}")  # NUL-padded: no key holds a NUL, so it sorts as the keys do
        start = 0
        for j, end in enumerate(self.ends.tolist()):
            cut[j] = bytes(self.names[start : min(end, start + width)])
            start = end
        order = np.argsort(cut, kind="stable")
        order = order[np.argsort(rank[order], kind="stable")]
        same = np.zeros(n, dtype=bool)  # same rank and cut name as the row before
        for a in range(1, n, _CHUNK):
            window = order[a - 1 : min(n, a + _CHUNK)]
            same[a : a + len(window) - 1] = (cut[window[1:]] == cut[window[:-1]]) & (rank[window[1:]] == rank[window[:-1]])
        del cut
        if not long.any():
            return order, same
        repeat = same.copy()  # names that fit whole: the same cut is the same name
        starts = np.flatnonzero(~same)  # each run of equal cuts begins here
        ends = np.append(starts[1:], n)
        run_of = np.cumsum(~same) - 1  # the run of each sorted position
        runs = np.unique(run_of[long[order]])  # runs holding a name longer than the cut (a short one may lead)
        runs = runs[ends[runs] - starts[runs] > 1]
        for lo, hi in ((int(starts[r]), int(ends[r])) for r in runs.tolist()):
            run = sorted(order[lo:hi].tolist(), key=lambda r: (self._name(r), r))  # full names, equal ones by row
            order[lo:hi] = run
            for k in range(lo + 1, hi):
                repeat[k] = self._name(run[k - lo]) == self._name(run[k - lo - 1])
        return order, repeat

    def _ranks(self) -> np.ndarray | None:
        """Each row's directory's rank in the order of `DIR/`, or None when that order is not the keys' order: some
        `DIR/` is a prefix of another's (a key of the top directory, without a '/', is a prefix of every one)."""
        framed = [(h + "/").encode("utf-8", "surrogatepass") if h else b"" for h in self.heads]
        by_order = sorted(range(len(framed)), key=framed.__getitem__)
        if len(framed) > 1 and any(framed[b].startswith(framed[a]) for a, b in zip(by_order, by_order[1:])):
            return None
        rank_of = np.empty(len(framed), np.int32)
        rank_of[by_order] = np.arange(len(framed), dtype=np.int32)
        return rank_of[self.head_of]

    def _whole_keys(self) -> tuple[bytearray, np.ndarray]:
        framed = [(h + "/").encode("utf-8", "surrogatepass") if h else b"" for h in self.heads]
        keys, ends, start = bytearray(), array("q"), 0
        for hid, end in zip(self.head_of.tolist(), self.ends.tolist()):
            keys += framed[hid]
            keys += self.names[start:end]
            ends.append(len(keys))
            start = end
        return keys, np.frombuffer(ends, np.int64)

    def _name(self, r: int) -> bytes:
        return bytes(self.names[int(self.ends[r - 1]) if r else 0 : int(self.ends[r])])


def _group_splits(rows: Sequence[Row], kept: np.ndarray, seed: int, fractions: dict[str, float], rule: GroupRule,
                  text: TextConfig) -> tuple[np.ndarray, dict[str, int]]:
    """(row → split number, split → groups) for the kept rows under `--group-by`. A group is hashed to 64 bits to be
    counted: at 16.5 M distinct groups two collide with probability ~1e-5, and a collision only miscounts, never
    moves a row."""
    code_of = {s: code for code, s in enumerate(SPLITS)}
    split_of = np.full(len(rows), -1, dtype=np.int8)
    kept_rows = np.flatnonzero(kept)
    grouped = array("q")
    group_hashes = array("Q")
    for i in map(int, kept_rows):
        row = rows[i]
        group = group_of(row, rule, text)
        split_of[i] = code_of[assign_split(row.key if group is None else group, seed, fractions)]
        if group is not None:
            grouped.append(i)
            digest = hashlib.blake2b(group.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            group_hashes.append(int.from_bytes(digest, "big"))
    if len(kept_rows) and not grouped:
        raise UserError(f"--group-by {rule.spec}: no row of SOURCE has a group ({what_groups(rule)})")
    if len(grouped) < len(kept_rows):
        log.warning("--group-by %s: %d of %d rows have no group (%s); each is split on its own key",
                    rule.spec, len(kept_rows) - len(grouped), len(kept_rows), what_groups(rule))
    counts = np.bincount(split_of[kept], minlength=len(SPLITS))
    if len(grouped):
        g_rows, g_hash = np.frombuffer(grouped, np.int64), np.frombuffer(group_hashes, np.uint64)
        g_codes = split_of[g_rows]
        for code in range(len(SPLITS)):
            counts[code] += len(np.unique(g_hash[g_codes == code])) - int((g_codes == code).sum())
    return split_of, {s: int(counts[code]) for code, s in enumerate(SPLITS)}
