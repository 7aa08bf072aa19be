"""Resuming inside an epoch: which items each reader skips so the rest equals the uninterrupted run.

The DataLoader merges its workers' streams round-robin (worker 0, 1, …, skipping finished workers), so the first
N batches of a rank are a prefix of every reader's stream. We replay that merge on metadata only (tar headers,
json and txt members; no audio read or decoded) to find each reader's prefix length and the reader whose turn comes
next; worker i of the resumed run then plays reader (next + i) mod workers, which continues the same cycle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .sample import EpochEnd


@dataclass
class ResumePlan:
    roles: list[int]  # reader role of DataLoader worker i
    skip_items: list[int]  # items (planned batches and epoch markers) each role skips
    skipped_batches: Counter = field(default_factory=Counter)  # epoch -> batches skipped (the index offset)


def plan_resume(spec, epoch: int, skip_batches: int, infinite: bool) -> ResumePlan:
    from .loader import make_handler, reader_items

    workers = spec.workers
    if skip_batches == 0:
        return ResumePlan(list(range(workers)), [0] * workers)
    streams = [reader_items(spec, r, epoch, infinite, handler=make_handler(spec, quiet=True), audio=False)
               for r in range(workers)]
    alive, consumed, skipped = [True] * workers, [0] * workers, Counter()
    batches, turn = 0, 0
    while batches < skip_batches and any(alive):
        if alive[turn]:
            item = next(streams[turn], None)
            if item is None:
                alive[turn] = False
            else:
                consumed[turn] += 1
                if not isinstance(item, EpochEnd):
                    batches += 1
                    skipped[item.epoch] += 1
        turn = (turn + 1) % workers
    roles = [(turn + i) % workers for i in range(workers)]
    return ResumePlan(roles, consumed, skipped)
