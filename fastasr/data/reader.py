"""One reader's stream: the spec a DataLoader worker rebuilds it from, and its planned batches epoch after epoch.

A reader (rank × worker role) reads its pieces (distributed.py) → KEY groups → samples → duration filter → speed
perturbation → shuffle buffer → buckets and budget, up to the batching decision; with a durations table the plan
comes from the table alone (fetch.py then reads what it asks for). loader.py runs the streams in DataLoader
workers; resume.py replays them on metadata to find where a resumed run continues.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from .bucketing import DurationBuckets, PaddedSecondsBudget
from .distributed import pieces_for
from .durations import durations_table
from .errors import SkipAndCount, raise_errors
from .sample import EpochEnd, PlannedBatch
from .stages import (OWN_SHARDS, SampleFormat, bucket_batches, filter_duration, map_samples, parse_sample,
                     perturb_speed, read_groups, shuffle_buffer, table_samples)


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a worker needs to rebuild its stream (pickled into worker processes)."""

    root: str  # the index's directory or URL prefix; shard paths resolve against it (fastasr.sources)
    split: str
    shards: tuple[str, ...]
    shard_samples: tuple[int, ...]  # KEY groups per shard, from index.json
    tokenizer: object  # text → ids (`encode`); pickled into the workers with the spec
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
    fmt: SampleFormat = OWN_SHARDS  # own shards, or foreign ones indexed by `fastasr index`
    durations: str | None = None  # the split's durations table: plans without opening shards (None: tar headers)
    exclude: tuple = ()  # ((epoch, {shard: resume.Ordinals}), …): delivered before a resume under another world
    speed_perturb: tuple[float, ...] = ()  # speed factors drawn per sample and epoch; () or (1.0,): off
    waveform: str = "peak_preemphasis"  # how decoded audio is conditioned for the model (fastasr.audio.files.WAVEFORMS)


def make_handler(spec: LoaderSpec, quiet: bool = False):
    return SkipAndCount(quiet=quiet) if spec.on_error == "skip" else raise_errors


def planned_batches(spec: LoaderSpec, role: int, epoch: int, *, handler, audio: bool = True) -> Iterator[PlannedBatch]:
    """One reader's epoch up to the batching decision; audio=False plans from metadata only (the same batches): from
    the durations table when the index has one (no shard opened), else from tar headers and json/txt members."""
    pieces = pieces_for(list(spec.shards), epoch=epoch, seed=spec.seed, shuffle=spec.shuffle, rank=spec.rank,
                        world_size=spec.world_size, role=role, workers=spec.workers)
    exclude = dict(spec.exclude).get(epoch)
    if not audio and spec.durations is not None:
        samples = table_samples(pieces, durations_table(spec.durations), exclude=exclude)
    else:
        groups = read_groups(pieces, root=spec.root, handler=handler, audio=audio,
                             expected=dict(zip(spec.shards, spec.shard_samples)), exclude=exclude)
        samples = map_samples(groups, partial(parse_sample, tokenizer=spec.tokenizer, fmt=spec.fmt),
                              handler=handler, stage="parse")
    samples = filter_duration(samples, min_duration=spec.min_duration, max_duration=spec.max_duration,
                              handler=handler)
    if len(spec.speed_perturb) > 1 or spec.speed_perturb[:1] not in ((), (1.0,)):
        samples = perturb_speed(samples, factors=spec.speed_perturb, seed=spec.seed, epoch=epoch)
    rng = np.random.default_rng([spec.seed, epoch, spec.rank, role]) if spec.shuffle else None
    if rng is not None:
        samples = shuffle_buffer(samples, size=spec.shuffle_buffer, rng=rng)
    budget = PaddedSecondsBudget(spec.max_batch_seconds, spec.max_batch_size)
    return bucket_batches(samples, buckets=DurationBuckets(spec.bucket_edges), budget=budget, epoch=epoch, rng=rng)


def reader_items(spec: LoaderSpec, role: int, epoch: int, infinite: bool, *, handler,
                 audio: bool = True) -> Iterator[PlannedBatch | EpochEnd]:
    """A reader's planned batches, epoch after epoch, each epoch closed by an EpochEnd.

    In infinite mode a reader that got nothing in an epoch stops (instead of spinning forever on no data), unless
    that epoch's samples had been delivered before a resume under another world size. An epoch planned but not
    delivered (planned from the durations table, its shards missing) goes on to the next: epochs.py sees the whole
    rank and ends the stream when none of its readers delivered anything.
    """
    while True:
        batches = samples = 0
        for planned in planned_batches(spec, role, epoch, handler=handler, audio=audio):
            batches += 1
            samples += len(planned.samples)
            yield planned
        counts = handler.take() if isinstance(handler, SkipAndCount) else {}
        final = not infinite or (batches == 0 and epoch not in dict(spec.exclude))  # (all delivered before: go on)
        yield EpochEnd(epoch, batches, samples, counts, final)
        if final:
            return
        epoch += 1
