"""Reading the samples a plan made from the durations table asks for, and nothing else.

With a durations table, a reader plans its epoch (shuffle buffer, buckets, budget) from the table alone, then
reads its pieces front to back and fills each planned batch with the real samples (audio bytes, transcript, token
ids). Samples the plan says were already delivered (the skipped part of a resumed epoch, or another world size's
run) are passed over, and a piece none of whose samples are still wanted is never opened. A planned sample can only
be emitted after it arrived in the plan's stream, so reading forward in the same piece order always finds it;
samples read ahead wait in a dict, which holds what the shuffle buffer and the open batches hold.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import SampleError, SkipAndCount
from .sample import Piece, PlannedBatch, Sample
from .stages import parse_sample, read_groups


class SampleFetcher:
    """One reader's epoch: `fill(planned)` returns the batch with real samples (missing ones reported and left out)."""

    def __init__(self, spec, pieces: list[Piece], table, skip: set[tuple[str, int]], *, handler):
        self.spec, self.handler = spec, handler
        self.position = {p.path: i for i, p in enumerate(pieces)}
        wanted: dict[str, frozenset[int]] = {}
        for p in pieces:
            values = table.shards.get(p.path, [])
            wanted[p.path] = frozenset(o for o in range(p.part, len(values), p.parts)
                                       if values[o] is not None and (p.path, o) not in skip)
        # Everything this reader does not want is excluded from the reading, so consumed shards are not opened.
        unwanted = {p.path: frozenset(o for o in range(len(table.shards.get(p.path, []))) if o not in wanted[p.path])
                    for p in pieces}
        todo = [p for p in pieces if wanted[p.path]]
        rejected = sum(1 for p in pieces for v in table.shards.get(p.path, [])[p.part::p.parts] if v is None)
        if rejected and isinstance(handler, SkipAndCount):  # named in rejected.tsv already: counted, not re-logged
            handler.counts["rejected_at_index"] += rejected
        expected = dict(zip(spec.shards, spec.shard_samples))
        self.groups = read_groups(todo, root=spec.root, handler=handler, expected=expected, exclude=unwanted)
        self.read: dict[tuple[str, int], Sample | tuple[BaseException, str]] = {}
        self.at = -1  # position of the piece being read
        self.done = False

    def _advance(self) -> bool:
        group = next(self.groups, None)
        if group is None:
            self.done = True
            return False
        self.at = self.position[group.shard]
        try:
            self.read[(group.shard, group.ordinal)] = parse_sample(group, tokenizer=self.spec.tokenizer,
                                                                   fmt=self.spec.fmt)
        except Exception as exc:
            self.read[(group.shard, group.ordinal)] = (exc, group.key)
        return True

    def _get(self, planned: Sample) -> Sample | tuple[BaseException, str]:
        key = (planned.shard, planned.ordinal)
        target = self.position[planned.shard]
        while key not in self.read and not self.done and self.at <= target:
            self._advance()
        found = self.read.pop(key, None)
        if found is None:  # its shard ended early or could not be read (reported by read_groups)
            return SampleError("missing", f"sample {planned.ordinal} not found in the shard"), planned.key
        return found

    def fill(self, planned: PlannedBatch) -> PlannedBatch:
        samples = []
        for p in planned.samples:
            got = self._get(p)
            if isinstance(got, tuple):
                self.handler(got[0], got[1], "parse")
                continue
            got.duration, got.speed = p.duration, p.speed  # the plan's: speed perturbation was drawn there
            samples.append(got)
        return PlannedBatch(planned.epoch, planned.ordinal, samples)


def filled(items: Iterator, fetchers_for, skipped: dict[int, set]) -> Iterator:
    """Plan items → the same items with real samples; `fetchers_for(epoch, skip)` makes an epoch's fetcher."""
    fetchers: dict[int, SampleFetcher] = {}
    for item in items:
        if not isinstance(item, PlannedBatch):
            fetchers.pop(item.epoch, None)
            yield item
            continue
        if item.epoch not in fetchers:
            fetchers[item.epoch] = fetchers_for(item.epoch, skipped.pop(item.epoch, set()))
        yield fetchers[item.epoch].fill(item)
