"""Resuming inside an epoch: which items each reader skips so the rest equals the uninterrupted run, and how an
epoch goes on under another world size.

Same world size. The DataLoader merges its workers' streams round-robin (worker 0, 1, …, skipping finished workers),
so the first N batches of a rank are a prefix of every reader's stream. We replay that merge on metadata only —
the split's durations table when the index has one (no shard opened), else tar headers and json/txt members — to
find each reader's prefix length and the reader whose turn comes next; worker i of the resumed run then plays
reader (next + i) mod workers, which continues the same cycle.

Another world size. Replaying every old rank's merge the same way tells which samples (shard, ordinal) the old
run had delivered in each epoch. The new run starts at the earliest epoch an old reader was still in and leaves
those samples out of that epoch and of any later one some reader had reached: every utterance of the epoch is
delivered once in total, none twice, none skipped. Checkpoints are taken between optimiser steps, whose batches
are all counted, so no batch is in flight at a save; the replay trusts the metadata, so a shard that became
unreadable since the save makes it approximate (its samples count as not delivered).
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from .reader import make_handler, reader_items
from .sample import EpochEnd


@dataclass
class ResumePlan:
    roles: list[int]  # reader role of DataLoader worker i
    skip_items: list[int]  # items (planned batches and epoch markers) each role skips
    skipped_batches: Counter = field(default_factory=Counter)  # epoch -> batches skipped (the index offset)
    epochs: list[int] = field(default_factory=list)  # per role, the epoch its next item belongs to


def plan_resume(spec, epoch: int, skip_batches: int, infinite: bool, seen=None) -> ResumePlan:
    """`seen(planned_batch)` is called for each skipped batch (to collect what was delivered)."""
    workers = spec.workers
    if skip_batches == 0:
        return ResumePlan(list(range(workers)), [0] * workers, epochs=[epoch] * workers)
    streams = [reader_items(spec, r, epoch, infinite, handler=make_handler(spec, quiet=True), audio=False)
               for r in range(workers)]
    alive, consumed, skipped = [True] * workers, [0] * workers, Counter()
    current = [epoch] * workers
    batches, turn = 0, 0
    while batches < skip_batches and any(alive):
        if alive[turn]:
            item = next(streams[turn], None)
            if item is None:
                alive[turn] = False
            else:
                consumed[turn] += 1
                if isinstance(item, EpochEnd):
                    current[turn] = item.epoch + 1
                else:
                    batches += 1
                    skipped[item.epoch] += 1
                    current[turn] = item.epoch
                    if seen is not None:
                        seen(item)
        turn = (turn + 1) % workers
    roles = [(turn + i) % workers for i in range(workers)]
    return ResumePlan(roles, consumed, skipped, current)


class Ordinals:
    """A frozen set of one shard's sample ordinals as a bitmap (bit i: ordinal i): 125 bytes for a shard of 1,000
    samples, where a frozenset of them is ~40 KB. A run resharded deep into an epoch excludes most of it, and the
    exclusions travel in every reader's spec: at Open STT's 16.5 M samples ~2 MB of bitmaps instead of ~1 GB."""

    __slots__ = ("bits", "count")

    def __init__(self, ordinals=()):
        values = np.fromiter((int(o) for o in ordinals), dtype=np.int64)
        if values.size and values.min() < 0:
            raise ValueError(f"sample ordinals are ≥ 0, got {int(values.min())}")
        present = np.zeros(int(values.max()) + 1 if values.size else 0, dtype=bool)
        present[values] = True
        self.bits = np.packbits(present, bitorder="little").tobytes()
        self.count = int(present.sum())

    def __contains__(self, i) -> bool:
        return 0 <= i < 8 * len(self.bits) and bool(self.bits[i >> 3] >> (i & 7) & 1)

    def __iter__(self):
        bits = np.unpackbits(np.frombuffer(self.bits, dtype=np.uint8), bitorder="little")
        return iter(np.flatnonzero(bits).tolist())

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other) -> bool:
        return set(self) == set(other) if isinstance(other, (Ordinals, set, frozenset)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.bits.rstrip(b"\0"))

    def __repr__(self) -> str:
        return f"Ordinals({len(self)} samples)"


def exclusions(exclude) -> tuple:
    """{epoch: {shard: ordinals}} as the spec holds it (hashable, picklable, one Ordinals bitmap per shard)."""
    return tuple(sorted((int(e), {k: v if isinstance(v, Ordinals) else Ordinals(v) for k, v in shards.items()})
                        for e, shards in (exclude or {}).items()))


def stream_state(spec) -> dict:
    """What defines this rank's streams beyond the data settings: recorded with the positions in a checkpoint."""
    return {"world": spec.world_size, "workers": spec.workers,
            "exclude": {str(e): {k: sorted(v) for k, v in shards.items()} for e, shards in spec.exclude}}


def continue_elsewhere(spec, state: dict, positions: list[dict], infinite: bool = True) -> tuple[int, dict, int]:
    """(epoch to start at, exclusions {epoch: {shard: ordinals}}, samples already delivered) for a run under
    spec.world_size continuing one of state["world"] ranks that had delivered positions[r]["batches"] batches
    from positions[r]["epoch"] each."""
    old_exclude = {int(e): {k: Ordinals(v) for k, v in shards.items()} for e, shards in state.get("exclude", {}).items()}
    delivered: dict[int, dict[str, array]] = defaultdict(lambda: defaultdict(lambda: array("q")))
    count = [0]

    def seen(planned) -> None:  # ordinals in arrays (8 bytes each, not a set entry): 16.5 M of them fit
        for s in planned.samples:
            delivered[planned.epoch][s.shard].append(s.ordinal)
        count[0] += len(planned.samples)

    current = []
    for r, pos in enumerate(positions):
        old = replace(spec, rank=r, world_size=int(state["world"]), workers=int(state["workers"]),
                      exclude=exclusions(old_exclude))
        current += plan_resume(old, int(pos["epoch"]), int(pos["batches"]), infinite, seen=seen).epochs
    start = min(current) if current else 0
    exclude: dict[int, dict[str, Ordinals]] = {}
    for e in sorted(set(old_exclude) | set(delivered)):
        if e < start:
            continue
        old, new = old_exclude.get(e, {}), delivered.get(e, {})
        exclude[e] = {k: Ordinals([*old.get(k, ()), *new.get(k, ())]) for k in {*old, *new}}
    return start, exclude, count[0]
