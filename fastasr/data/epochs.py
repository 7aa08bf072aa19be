"""One rank's epochs as its readers report them: the counts, the moment an epoch is over, and the end of training
when an epoch delivered nothing.

Each reader (DataLoader worker) runs its own epochs and closes each with an EpochEnd; an epoch is over on this
rank once every reader still running has closed it (a reader stops after an epoch with nothing planned for it,
EpochEnd.final). In infinite mode an epoch that is over and delivered no batch ends the stream with one UserError
naming the split and the skip counts by reason: its shards are missing, unreadable or hold no usable sample, and
the next epoch would read the same shards (in another order) and deliver nothing again, forever. An epoch whose
samples were all delivered before a resume under another world size (`exclude`) is allowed to be empty.
"""

from __future__ import annotations

import logging
from collections import Counter

from fastasr import sources
from fastasr.errors import UserError

from .sample import EpochEnd

log = logging.getLogger("fastasr.data")


class EpochTally:
    """Fed every item a rank's DataLoader yields: `batch(epoch)` numbers a batch, `end(epoch_end)` records a reader's
    EpochEnd and raises (infinite mode) when an epoch that is over delivered nothing."""

    def __init__(self, spec, stats: dict[int, Counter], *, skipped_batches: Counter, infinite: bool):
        self.spec, self.stats, self.infinite = spec, stats, infinite
        self.delivered = Counter(skipped_batches)  # per epoch; batches skipped for a resume count as delivered
        self.ends: Counter = Counter()
        self.finals: list[int] = []  # the epochs after which a reader stopped
        self.over: set[int] = set()

    def batch(self, epoch: int) -> int:
        """The batch's index in its epoch on this rank."""
        self.delivered[epoch] += 1
        return self.delivered[epoch] - 1

    def end(self, end: EpochEnd) -> None:
        stats = self.stats.setdefault(end.epoch, Counter())
        stats["batches"] += end.batches
        stats["samples"] += end.samples
        stats.update(end.skipped)
        self.ends[end.epoch] += 1
        candidates = [end.epoch]
        if end.final:  # later epochs now wait for one reader fewer
            self.finals.append(end.epoch)
            candidates += sorted(e for e in self.ends if e > end.epoch)
        for e in candidates:
            running = self.spec.workers - sum(f < e for f in self.finals)
            if e not in self.over and self.ends[e] >= running:
                self.over.add(e)
                self._epoch_over(e)

    def _epoch_over(self, epoch: int) -> None:
        stats = self.stats[epoch]
        skipped = {k: v for k, v in stats.items() if k not in ("batches", "samples")}
        log.info("%s, rank %d epoch %d: %d batches, %d samples, skipped %s", self.spec.split, self.spec.rank, epoch,
                 stats["batches"], stats["samples"], skipped or "none")
        if self.infinite and not self.delivered[epoch] and epoch not in dict(self.spec.exclude):
            raise self.no_data(epoch)

    def no_data(self, epoch: int | None = None) -> UserError:
        """The error that ends a stream with nothing to deliver (`epoch`: the empty one; None: the last recorded)."""
        spec = self.spec
        epoch = max(self.stats, default=0) if epoch is None else epoch
        why = {k: v for k, v in self.stats.get(epoch, {}).items() if k not in ("batches", "samples")}
        if why:
            found = ("skipped " + ", ".join(f"{k} {v}" for k, v in sorted(why.items()))
                     + "; the warnings above name the shards and samples")
        else:
            found = (f"its part of the split is empty: {sum(spec.shard_samples)} samples in {len(spec.shards)} "
                     f"shards for {spec.world_size} ranks × {spec.workers} readers")
        return UserError(f"split {spec.split!r} of {sources.describe(spec.root)}: no data for rank {spec.rank}, "
                         f"its epoch {epoch} delivered no batch ({found}); training needs usable samples in the "
                         "shards of every rank")
