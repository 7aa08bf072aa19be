"""build_loader: shards → padded Batches, the stages of stages.py composed in one place (DESIGN.md's data flow).

Per worker, per epoch: pieces (distributed.py) → read tar → group by key → parse json/txt, tokenise → duration
filter → sample shuffle buffer → bucket + padded-seconds budget (from json durations, before decoding)
→ [skip for resume] → decode (soundfile) → mono → 16 kHz (soxr) → Numba normalise + pre-emphasis → pad → Batch.
The torch DataLoader runs one such stream per worker (batch_size=None) and merges them round-robin.

Epochs across ranks. Finite mode (infinite=False): one epoch; the pieces of distributed.py give every rank and
worker a disjoint part, so across ranks every utterance is delivered exactly once; ranks may yield different
batch counts (batches are cut from durations found inside the shards) and each rank's iteration simply ends —
nothing waits on another rank. Infinite mode: each worker runs epoch, epoch+1, … on its own, so a rank never runs
dry and training counts steps; a rank with no data at all raises instead of hanging.

Determinism and resume. Batches depend only on (seed, epoch, rank, world_size, num_workers, shards, batching
options): shard order is shuffled with (seed, epoch), the sample buffer with (seed, epoch, rank, worker).
skip_batches=N with epoch=E reproduces exactly — same keys, same order, same Batch.index — what a run started at
epoch E delivers after its first N batches; skipped batches are planned from tar headers and json/txt members only,
never read or decoded as audio. Loader.position() gives the (epoch, skip_batches) that continues after the last
delivered batch. Not reproduced: the skip counts of the skipped part, and if a whole planned batch failed to
decode in the skipped part, resume skips one delivered batch fewer (the plan counts it, the run never delivered it).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fastasr.text import Tokenizer

from .bucketing import DurationBuckets, PaddedSecondsBudget, geometric_edges
from .distributed import pieces_for, resolve_world
from .errors import SkipAndCount, raise_errors
from .sample import Batch, EpochEnd, PlannedBatch
from .stages import (bucket_batches, decode_batches, filter_duration, map_samples, pad_batch, parse_sample,
                     read_groups, shuffle_buffer, warm_up)

log = logging.getLogger("fastasr.data")


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a worker needs to rebuild its stream (pickled into worker processes)."""

    root: str
    split: str
    shards: tuple[str, ...]
    shard_samples: tuple[int, ...]  # per shard, from index.json
    alphabet: str
    max_batch_seconds: float
    max_batch_size: int | None
    bucket_edges: tuple[float, ...]
    shuffle: bool
    shuffle_buffer: int
    seed: int
    rank: int
    world_size: int
    workers: int  # reader roles per rank: max(1, num_workers)
    min_duration: float
    max_duration: float | None
    on_error: str  # "skip" (warn, count, go on) or "raise"


def make_handler(spec: LoaderSpec, quiet: bool = False):
    return SkipAndCount(quiet=quiet) if spec.on_error == "skip" else raise_errors


def planned_batches(spec: LoaderSpec, role: int, epoch: int, *, handler, audio: bool = True) -> Iterator[PlannedBatch]:
    """One reader's epoch up to the batching decision; audio=False reads metadata only (same batches)."""
    pieces = pieces_for(list(spec.shards), epoch=epoch, seed=spec.seed, shuffle=spec.shuffle, rank=spec.rank,
                        world_size=spec.world_size, role=role, workers=spec.workers)
    groups = read_groups(pieces, root=Path(spec.root), handler=handler, audio=audio,
                         expected=dict(zip(spec.shards, spec.shard_samples)))
    samples = map_samples(groups, partial(parse_sample, tokenizer=Tokenizer(spec.alphabet)), handler=handler,
                          stage="parse")
    samples = filter_duration(samples, min_duration=spec.min_duration, max_duration=spec.max_duration,
                              handler=handler)
    rng = np.random.default_rng([spec.seed, epoch, spec.rank, role]) if spec.shuffle else None
    if rng is not None:
        samples = shuffle_buffer(samples, size=spec.shuffle_buffer, rng=rng)
    budget = PaddedSecondsBudget(spec.max_batch_seconds, spec.max_batch_size)
    return bucket_batches(samples, buckets=DurationBuckets(spec.bucket_edges), budget=budget, epoch=epoch, rng=rng)


def reader_items(spec: LoaderSpec, role: int, epoch: int, infinite: bool, *, handler,
                 audio: bool = True) -> Iterator[PlannedBatch | EpochEnd]:
    """A reader's planned batches, epoch after epoch, each epoch closed by an EpochEnd.

    In infinite mode a reader that got nothing in an epoch stops (instead of spinning forever on no data).
    """
    while True:
        batches = samples = 0
        for planned in planned_batches(spec, role, epoch, handler=handler, audio=audio):
            batches += 1
            samples += len(planned.samples)
            yield planned
        counts = handler.take() if isinstance(handler, SkipAndCount) else {}
        yield EpochEnd(epoch, batches, samples, counts)
        if not infinite or batches == 0:
            return
        epoch += 1


class ShardStream(IterableDataset):
    """One reader stream per DataLoader worker; worker i plays reader role roles[i] (rotated when resuming)."""

    def __init__(self, spec: LoaderSpec, *, epoch: int, infinite: bool, roles: list[int], skip_items: list[int]):
        self.spec, self.epoch, self.infinite = spec, epoch, infinite
        self.roles, self.skip_items = roles, skip_items

    def __iter__(self) -> Iterator[Batch | EpochEnd]:
        info = get_worker_info()
        role = self.roles[info.id if info is not None else 0]
        handler = make_handler(self.spec)
        items = reader_items(self.spec, role, self.epoch, self.infinite, handler=handler)
        for item in islice(items, self.skip_items[role], None):  # resume: skipped batches are never decoded
            if isinstance(item, EpochEnd):
                yield item
                continue
            for decoded in decode_batches([item], handler=handler):
                yield pad_batch(decoded)


class Loader:
    """Iterable of Batch for one rank. Each `iter()` starts at (epoch, skip_batches); `set_epoch` moves on.

    `stats[epoch]` holds this rank's counts: batches, samples and the skipped samples by reason.
    """

    def __init__(self, spec: LoaderSpec, *, num_workers: int, epoch: int, skip_batches: int, infinite: bool,
                 pin_memory: bool, prefetch_factor: int | None):
        self.spec, self.num_workers, self.infinite = spec, num_workers, infinite
        self.epoch, self.skip_batches = epoch, skip_batches
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.stats: dict[int, Counter] = {}
        self._delivered = skip_batches

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches
        self._delivered = skip_batches

    def position(self) -> dict:
        """Where the current iteration stands, as build_loader arguments: {"epoch": E, "skip_batches": N}.

        E is the epoch this stream started at and N the batches delivered since (skipped ones included), so
        build_loader(…, epoch=E, skip_batches=N) continues exactly after the last delivered batch, in both modes
        and with any num_workers. (In infinite mode with several workers, workers cross epoch boundaries at
        different times, so the last batch's (epoch, index + 1) is exact only with num_workers ≤ 1.)
        """
        return {"epoch": self.epoch, "skip_batches": self._delivered}

    def __iter__(self) -> Iterator[Batch]:
        from .resume import plan_resume

        spec = self.spec
        warm_up()
        plan = plan_resume(spec, self.epoch, self.skip_batches, self.infinite)
        dataset = ShardStream(spec, epoch=self.epoch, infinite=self.infinite, roles=plan.roles,
                              skip_items=plan.skip_items)
        extra = {} if self.num_workers == 0 else {"prefetch_factor": self.prefetch_factor}
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            **extra)
        index = Counter(plan.skipped_batches)
        ends = Counter()
        self._delivered = self.skip_batches
        for item in loader:
            if isinstance(item, EpochEnd):
                self._record(item, ends)
                continue
            item.index = index[item.epoch]
            index[item.epoch] += 1
            self._delivered += 1
            yield item
        if self.infinite:
            raise RuntimeError(f"rank {spec.rank}: no data in split {spec.split!r} of {spec.root} for this rank "
                               f"(infinite mode needs at least one sample per rank and worker)")

    def _record(self, end: EpochEnd, ends: Counter) -> None:
        stats = self.stats.setdefault(end.epoch, Counter())
        stats["batches"] += end.batches
        stats["samples"] += end.samples
        stats.update(end.skipped)
        ends[end.epoch] += 1
        if ends[end.epoch] == self.spec.workers:
            skipped = {k: v for k, v in stats.items() if k not in ("batches", "samples")}
            log.info("rank %d epoch %d: %d batches, %d samples, skipped %s", self.spec.rank, end.epoch,
                     stats["batches"], stats["samples"], skipped or "none")


def read_index(source: str | Path) -> dict:
    path = Path(source) / "index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != "fastasr-shards/1":
        raise ValueError(f"{path}: format {index.get('format')!r}, expected 'fastasr-shards/1'")
    return index


def build_loader(source, split: str = "train", *, max_batch_seconds: float, num_workers: int, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, skip_batches: int = 0, infinite: bool = False,
                 rank: int | None = None, world_size: int | None = None, pin_memory: bool | None = None,
                 max_batch_size: int | None = None, shuffle_buffer: int = 1000,
                 bucket_edges: tuple[float, ...] | None = None, min_duration: float = 0.0,
                 max_duration: float | None = None, on_error: str = "skip", prefetch_factor: int = 4) -> Loader:
    """Batches of split `split` of the shard directory `source` for this rank (DESIGN.md).

    max_batch_seconds bounds B × (longest duration in the batch), from the json durations. infinite=False: one
    epoch, each rank its part (across ranks every utterance exactly once); infinite=True: epoch, epoch+1, … forever.
    skip_batches: the first N batches of this rank's stream from `epoch` are not delivered (nor decoded); the rest
    is exactly what an uninterrupted run would have delivered (same seed, num_workers, world size).
    on_error: "skip" (corrupt samples are logged with their KEY, counted in `stats`, and skipped) or "raise".
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if num_workers < 0 or skip_batches < 0:
        raise ValueError(f"num_workers and skip_batches must be ≥ 0, got {num_workers}, {skip_batches}")
    index = read_index(source)
    if split not in index["splits"]:
        raise KeyError(f"split {split!r} not in {Path(source) / 'index.json'} (has {sorted(index['splits'])})")
    rank, world_size = resolve_world(rank, world_size)
    spec = LoaderSpec(
        root=str(source),
        split=split,
        shards=tuple(s["path"] for s in index["splits"][split]["shards"]),
        shard_samples=tuple(int(s["samples"]) for s in index["splits"][split]["shards"]),
        alphabet=index["text"]["alphabet"],
        max_batch_seconds=float(max_batch_seconds),
        max_batch_size=max_batch_size,
        bucket_edges=tuple(bucket_edges) if bucket_edges is not None else geometric_edges(),
        shuffle=shuffle,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=max(1, num_workers),
        min_duration=min_duration,
        max_duration=max_duration,
        on_error=on_error,
    )
    PaddedSecondsBudget(spec.max_batch_seconds, max_batch_size)  # validate early, in the caller's process
    DurationBuckets(spec.bucket_edges)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return Loader(spec, num_workers=num_workers, epoch=epoch, skip_batches=skip_batches, infinite=infinite,
                  pin_memory=pin_memory, prefetch_factor=prefetch_factor)
