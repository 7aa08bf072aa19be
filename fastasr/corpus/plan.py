"""The plan of a build from its listing: the rows rejected before any file is opened, and every other row's split
and shard. Linear in memory at Open STT scale (16.5 M rows): arrays, not a dict or a string per row.

- A row the reader already rejected (a malformed line) is rejected as it stands.
- Duplicate keys: the first row of a key in listing order keeps it, every later one is `duplicate_key`. Found by
  sorting the keys (UTF-8 bytes sort in code point order, the order Python sorts the strings in), which the shard
  cut needs anyway.
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
from typing import Sequence

import numpy as np

from fastasr.corpus.checks import Reject
from fastasr.corpus.grouping import GroupRule, group_of, what_groups
from fastasr.corpus.rows import Row
from fastasr.corpus.segments import overlapping
from fastasr.corpus.split import SPLITS, ShardPlan, assign_split
from fastasr.errors import UserError
from fastasr.text.normalization import DEFAULT_TEXT, TextConfig

log = logging.getLogger("fastasr.shard")


@dataclass(frozen=True)
class Plan:
    shards: list[ShardPlan]  # every split's shards, train then val then test; rows are arrays of row numbers
    pre_rejects: list[Reject]
    group_counts: dict[str, int]  # split → groups in it (rows without a group count one each)


def plan_rows(rows: Sequence[Row], seed: int, fractions: dict[str, float], shard_size: int,
              rule: GroupRule | None = None, text: TextConfig = DEFAULT_TEXT) -> Plan:
    n = len(rows)
    early: list[tuple[int, Reject]] = []  # (row, reject) in listing order
    usable = array("q")  # rows that get a key
    key_buf, key_ends = bytearray(), array("q")
    segments = array("q")
    width = 1
    for i, row in enumerate(rows):
        if row.reject:
            early.append((i, Reject(row.label, row.reject, row.detail)))
            continue
        key = row.key.encode("utf-8", "surrogatepass")
        width = max(width, len(key))
        key_buf += key
        key_ends.append(len(key_buf))
        usable.append(i)
        if row.is_segment:
            segments.append(i)
    usable_rows = np.frombuffer(usable, dtype=np.int64) if len(usable) else np.zeros(0, np.int64)
    keys = _fixed_width(key_buf, key_ends, width)
    del key_buf
    order = np.argsort(keys, kind="stable")  # equal keys stay in listing order: the first is the one kept
    repeat = _repeats(keys, order)  # sorted position → its key equals the previous one
    del keys
    first = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))  # each run's first position
    for pos in np.flatnonzero(repeat).tolist():
        dup, kept_by = rows[int(usable_rows[order[pos]])], rows[int(usable_rows[order[first[pos]]])]
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

    split_of, counts = _splits(rows, kept, seed, fractions, rule, text)
    by_key = by_key[kept[by_key]]
    shards = []
    for code, split in enumerate(SPLITS):
        mine = by_key[split_of[by_key] == code]
        shards += [ShardPlan(split, number, mine[start : start + shard_size])
                   for number, start in enumerate(range(0, len(mine), shard_size))]
    return Plan(shards, pre_rejects, counts)


def _fixed_width(buf: bytearray, ends: array, width: int) -> np.ndarray:
    """The keys packed end to end in `buf` as one fixed-width bytes array (numpy's S dtype pads with NULs, which no
    key holds, so it compares and sorts as the keys do)."""
    keys = np.zeros(len(ends), dtype=f"S{width}")
    start = 0
    for j, end in enumerate(ends):
        keys[j] = bytes(buf[start:end])
        start = end
    return keys


def _repeats(keys: np.ndarray, order: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """repeat[p]: keys[order[p]] == keys[order[p - 1]], compared a chunk at a time (a sorted copy of every key
    would double the keys' memory)."""
    repeat = np.zeros(len(order), dtype=bool)
    for start in range(1, len(order), chunk):
        stop = min(len(order), start + chunk)
        window = keys[order[start - 1 : stop]]
        repeat[start:stop] = window[1:] == window[:-1]
    return repeat


def _splits(rows: Sequence[Row], kept: np.ndarray, seed: int, fractions: dict[str, float], rule: GroupRule | None,
            text: TextConfig) -> tuple[np.ndarray, dict[str, int]]:
    """(row → split number, split → groups) for the kept rows. A group is hashed to 64 bits to be counted: at 16.5 M
    distinct groups two collide with probability ~1e-5, and a collision only miscounts, never moves a row."""
    code_of = {s: code for code, s in enumerate(SPLITS)}
    split_of = np.full(len(rows), -1, dtype=np.int8)
    kept_rows = np.flatnonzero(kept)
    grouped = array("q")
    group_hashes = array("Q")
    for i in map(int, kept_rows):
        row = rows[i]
        group = group_of(row, rule, text) if rule is not None else None
        split_of[i] = code_of[assign_split(row.key if group is None else group, seed, fractions)]
        if group is not None:
            grouped.append(i)
            digest = hashlib.blake2b(group.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            group_hashes.append(int.from_bytes(digest, "big"))
    if rule is not None and len(kept_rows) and not grouped:
        raise UserError(f"--group-by {rule.spec}: no row of SOURCE has a group ({what_groups(rule)})")
    if rule is not None and len(grouped) < len(kept_rows):
        log.warning("--group-by %s: %d of %d rows have no group (%s); each is split on its own key",
                    rule.spec, len(kept_rows) - len(grouped), len(kept_rows), what_groups(rule))
    codes = split_of[kept]
    counts = np.bincount(codes, minlength=len(SPLITS))
    if len(grouped):
        g_rows, g_hash = np.frombuffer(grouped, np.int64), np.frombuffer(group_hashes, np.uint64)
        g_codes = split_of[g_rows]
        for code in range(len(SPLITS)):
            counts[code] += len(np.unique(g_hash[g_codes == code])) - int((g_codes == code).sum())
    return split_of, {s: int(counts[code]) for code, s in enumerate(SPLITS)}
