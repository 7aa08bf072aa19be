"""build_loader: shards → padded Batches, the stages of stages.py composed in one place (DESIGN.md's data flow).

Per worker, per epoch, one reader's stream (reader.py): pieces (distributed.py) → read tar → group by key → parse
json/txt, tokenise → duration filter → speed perturbation → sample shuffle buffer → bucket + padded-seconds budget
(before decoding; planned from the durations table when the index has one, then filled from the shards by
fetch.py) → [skip for resume] → audio header checked → decode (soundfile) → mono → 16 kHz (soxr) → Numba
normalise + pre-emphasis → pad → Batch. The torch DataLoader runs one such stream per worker (batch_size=None) and merges them round-robin.

Epochs across ranks. Finite mode (infinite=False): one epoch; the pieces of distributed.py give every rank and
worker a disjoint part, so across ranks every utterance is delivered exactly once; ranks may yield different
batch counts (batches are cut from durations found inside the shards) and each rank's iteration simply ends —
nothing waits on another rank. Infinite mode: each worker runs epoch, epoch+1, … on its own, so a rank never runs
dry and training counts steps. An epoch of a rank that delivered no batch (its shards missing, unreadable or all
bad) ends its stream with one UserError naming the split and the skip counts by reason (epochs.py), instead of
spinning through empty epochs. Each rank decides from its own stream: with every rank's data bad, every rank stops
after its first epoch; with one rank's alone, that rank exits (exit 2) and the others, waiting in their next
collective, are ended by torchrun (or fail after train.dist_timeout_s without it).

Determinism and resume. Batches depend only on (seed, epoch, rank, world_size, num_workers, shards, batching
options): shard order is shuffled with (seed, epoch), the sample buffer with (seed, epoch, rank, worker).
skip_batches=N with epoch=E reproduces exactly — same keys, same order, same Batch.index — what a run started at
epoch E delivers after its first N batches; skipped batches are planned from the durations table (else tar headers
and json/txt members), never read or decoded as audio; under another world size resume.py continues the epoch. Loader.position() gives the (epoch, skip_batches) that continues after the last
delivered batch. Not reproduced: the skip counts of the skipped part, and if a whole planned batch failed to
decode in the skipped part, resume skips one delivered batch fewer (the plan counts it, the run never delivered it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fastasr import sources
from fastasr.audio.files import WAVEFORMS
from fastasr.shards.index import Reach, open_index
from fastasr.text.normalization import TextConfig
from fastasr.text.tokenizer import CharTokenizer

from .bucketing import DurationBuckets, PaddedSecondsBudget, geometric_edges
from .distributed import pieces_for, resolve_world
from .durations import durations_table, node_copy, table_url
from .epochs import EpochTally
from .errors import SampleError, SkipAndCount
from .fetch import SampleFetcher, filled
from .reader import LoaderSpec, make_handler, reader_items
from .resume import continue_elsewhere, exclusions, plan_resume, stream_state
from .sample import Batch, EpochEnd, Piece
from .stages import OWN_SHARDS, SampleFormat, decode_batches, pad_batch, parse_text, read_groups, warm_up

log = logging.getLogger("fastasr.data")


class ShardStream(IterableDataset):
    """One reader stream per DataLoader worker; worker i plays reader role roles[i] (rotated when resuming)."""

    def __init__(self, spec: LoaderSpec, *, epoch: int, infinite: bool, roles: list[int], skip_items: list[int]):
        self.spec, self.epoch, self.infinite = spec, epoch, infinite
        self.roles, self.skip_items = roles, skip_items

    def __iter__(self) -> Iterator[Batch | EpochEnd]:
        info = get_worker_info()
        role = self.roles[info.id if info is not None else 0]
        spec, handler = self.spec, make_handler(self.spec)
        # With a durations table the epoch is planned from the table and its batches filled from the shards
        # (fetch.py): skipped batches cost neither reading nor decoding, and consumed shards are not opened.
        planned_only = spec.durations is not None
        items = reader_items(spec, role, self.epoch, self.infinite, handler=handler, audio=not planned_only)
        skipped: dict[int, set] = {}
        for _ in range(self.skip_items[role]):  # resume: skipped batches are never decoded
            item = next(items, None)
            if item is None:
                return
            if isinstance(item, EpochEnd):
                yield item
            elif planned_only:
                skipped.setdefault(item.epoch, set()).update((s.shard, s.ordinal) for s in item.samples)
        if planned_only:
            items = filled(items, partial(self._fetcher, role, handler), skipped)
        for item in items:
            if isinstance(item, EpochEnd):
                yield item
                continue
            for decoded in decode_batches([item], handler=handler, max_duration=spec.max_duration,
                                          waveform=spec.waveform):
                yield pad_batch(decoded)

    def _fetcher(self, role: int, handler, epoch: int, skip: set) -> SampleFetcher:
        spec = self.spec
        pieces = pieces_for(list(spec.shards), epoch=epoch, seed=spec.seed, shuffle=spec.shuffle, rank=spec.rank,
                            world_size=spec.world_size, role=role, workers=spec.workers)
        excluded = dict(spec.exclude).get(epoch, {})
        skip = skip | {(p.path, o) for p in pieces for o in excluded.get(p.path, ())}  # its own shards' only
        return SampleFetcher(spec, pieces, durations_table(spec.durations), skip, handler=handler)


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

    def stream_state(self) -> dict:
        """Saved beside the positions of every rank: lets a run under another world size continue the epoch."""
        return stream_state(self.spec)

    def __iter__(self) -> Iterator[Batch]:
        spec = self.spec
        warm_up()
        plan = plan_resume(spec, self.epoch, self.skip_batches, self.infinite)
        dataset = ShardStream(spec, epoch=self.epoch, infinite=self.infinite, roles=plan.roles,
                              skip_items=plan.skip_items)
        extra = {} if self.num_workers == 0 else {"prefetch_factor": self.prefetch_factor,
                                                  "worker_init_fn": leave_signals_to_main}
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            **extra)
        tally = EpochTally(spec, self.stats, skipped_batches=plan.skipped_batches, infinite=self.infinite)
        self._delivered = self.skip_batches
        for item in loader:
            if isinstance(item, EpochEnd):
                tally.end(item)  # raises when an epoch of this rank delivered nothing (infinite mode)
                continue
            item.index = tally.batch(item.epoch)
            self._delivered += 1
            yield item
        if self.infinite:  # every reader stopped (nothing planned for any): the last epoch delivered nothing
            raise tally.no_data()


def read_index(source: str | Path, reach: Reach | None = None) -> dict:
    """index.json of a shard directory or URL prefix (through fastasr.sources), its fields checked and the paths it
    names within `reach` (shards.index.open_index: a UserError otherwise)."""
    return open_index(source, "source", reach=reach)[1]


def sample_format(index: dict, root: str, split: str, reach: Reach | None = None) -> SampleFormat:
    """Own shards, or shards other tools wrote that `fastasr index` described (its `origin`)."""
    origin = index.get("origin")
    if origin is None:
        return OWN_SHARDS
    text = None if origin.get("normalized", False) else TextConfig.from_dict(index["text"])
    return SampleFormat(transcript=origin.get("transcript", "txt"), text=text,
                        durations=table_url(root, index["splits"][split], reach))


def split_texts(source, split: str = "train", *, limit: int | None = None,
                reach: Reach | None = None) -> Iterator[str]:
    """The normalised transcripts of a split in index order, read without audio (e.g. to train a tokenizer);
    unusable samples are skipped (counted in the log). reach: the opt-ins of an index read from a URL."""
    index = read_index(source, reach)
    root = str(source)
    entry = index["splits"][split]
    fmt = sample_format(index, root, split, reach)
    handler = SkipAndCount(quiet=True)
    groups = read_groups([Piece(s["path"]) for s in entry["shards"]], root=root, handler=handler, audio=False)
    n = 0
    for group in groups:
        if limit is not None and n >= limit:
            break
        try:
            text = parse_text(group, fmt)[1]
            if not text:
                raise SampleError("bad_text", "empty transcript")
        except Exception as exc:
            handler(exc, group.key, "parse")
            continue
        n += 1
        yield text
    skipped = handler.take()
    if skipped:
        log.info("transcripts of %s/%s: skipped %s", source, split, dict(skipped))


def build_loader(source, split: str = "train", *, max_batch_seconds: float, num_workers: int, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, skip_batches: int = 0, infinite: bool = False,
                 rank: int | None = None, world_size: int | None = None, pin_memory: bool | None = None,
                 max_batch_size: int | None = None, shuffle_buffer: int = 1000,
                 bucket_edges: tuple[float, ...] | None = None, min_duration: float = 0.0,
                 max_duration: float | None = None, on_error: str = "skip", prefetch_factor: int = 4,
                 tokenizer=None, speed_perturb: tuple[float, ...] = (), exclude: dict | None = None,
                 continue_from: tuple[dict, list[dict]] | None = None, allow_pipe: bool = False,
                 allow_foreign_paths: bool = False, waveform: str = "peak_preemphasis") -> Loader:
    """Batches of split `split` of the shard directory `source` for this rank (DESIGN.md).

    max_batch_seconds bounds B × (longest duration in the batch), from the json durations. infinite=False: one
    epoch, each rank its part (across ranks every utterance exactly once); infinite=True: epoch, epoch+1, … forever.
    skip_batches: the first N batches of this rank's stream from `epoch` are not delivered (nor decoded); the rest
    is exactly what an uninterrupted run would have delivered (same seed, num_workers, world size).
    on_error: "skip" (corrupt samples are logged with their KEY, counted in `stats`, and skipped) or "raise".
    tokenizer: what turns transcripts into `tokens` (anything with `encode(text) -> list[int]` that pickles);
    default the characters of the index's alphabet.
    min_duration, max_duration: seconds; an utterance outside is skipped and counted (too_short / too_long) by its
    planned duration, and by its audio header (max_duration) before decoding. What the shards claim is checked
    before it is read: tar members from their headers (sparse or oversized members: shards.scan.refuse_member),
    the audio header against the planned duration, sample rate and channels (stages.check_header).
    waveform: how decoded audio is conditioned (fastasr.audio.files.WAVEFORMS: the model's front end decides,
    fastasr.model.transducer.waveform_of).
    speed_perturb: factors such as (0.9, 1.0, 1.1), one drawn per sample and epoch (resampling in the workers).
    exclude: {epoch: {shard path: sample ordinals}} not to deliver in that epoch (resume.py, another world size).
    continue_from: (stream_state, positions) of a run under another world size ({"epoch", "batches"} per old
    rank): this rank's share of what that run had not delivered yet, from the epoch it was in (resume.py);
    epoch, skip_batches and exclude are derived.
    source: a directory or a URL prefix (https://, s3://, gs://, any fsspec URL) holding index.json. An index read
    from a URL names its shards under its own prefix: it runs a `pipe:` command only with allow_pipe, and follows a
    path elsewhere (a local path, file://, another host or scheme) only with allow_foreign_paths (shards.index.Reach;
    an index in a local directory may name any of them). Its fields and its durations table are checked here
    (UserError naming the file and the field).
    """
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if num_workers < 0 or skip_batches < 0:
        raise ValueError(f"num_workers and skip_batches must be ≥ 0, got {num_workers}, {skip_batches}")
    root = str(source)
    reach = Reach(allow_pipe=allow_pipe, allow_foreign_paths=allow_foreign_paths)
    index = read_index(root, reach)
    if split not in index["splits"]:
        raise KeyError(f"split {split!r} not in {sources.join(root, 'index.json')} (has {sorted(index['splits'])})")
    if any(not (0.5 <= f <= 2.0) for f in speed_perturb):
        raise ValueError(f"speed_perturb factors must lie in [0.5, 2], got {speed_perturb}")
    rank, world_size = resolve_world(rank, world_size)
    entry = index["splits"][split]
    durations = _node_table(table_url(root, entry, reach), split, index)
    fmt = sample_format(index, root, split, reach)
    if fmt.durations is not None:  # another tool's shards: their durations from the same (node's) table
        fmt = replace(fmt, durations=durations)
    spec = LoaderSpec(
        root=root,
        split=split,
        shards=tuple(s["path"] for s in entry["shards"]),
        shard_samples=tuple(int(s.get("groups", s["samples"])) for s in entry["shards"]),
        tokenizer=tokenizer if tokenizer is not None else CharTokenizer.from_index(index),
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
        fmt=fmt,
        durations=durations,
        exclude=exclusions(exclude),
        speed_perturb=tuple(float(f) for f in speed_perturb),
        waveform=waveform,
    )
    if continue_from is not None:
        state, positions = continue_from
        epoch, exclude, delivered = continue_elsewhere(spec, state, positions, infinite)
        spec, skip_batches = replace(spec, exclude=exclusions(exclude)), 0
        log.info("rank %d: continuing epoch %d of a %d-rank run as rank %d of %d; the %d utterances it had delivered "
                 "are left out", rank, epoch, state["world"], rank, world_size, delivered)
    if spec.durations is not None:
        durations_table(spec.durations)  # read and checked here: a bad table is one UserError, not a worker's crash
    _log_fetches(spec)
    PaddedSecondsBudget(spec.max_batch_seconds, max_batch_size)  # validate early, in the caller's process
    DurationBuckets(spec.bucket_edges)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return Loader(spec, num_workers=num_workers, epoch=epoch, skip_batches=skip_batches, infinite=infinite,
                  pin_memory=pin_memory, prefetch_factor=prefetch_factor)


def _node_table(url: str | None, split: str, index: dict) -> str | None:
    """A remote durations table as the node's local copy (durations.node_copy), versioned by the index's digest."""
    if url is None or not sources.is_remote(url):
        return url
    digest = hashlib.sha256(json.dumps(index, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return node_copy(url, split, digest.hexdigest())


def _log_fetches(spec: LoaderSpec) -> None:
    """Fewer shards than readers: each shard is cut into parts read by several readers, each streaming all of it."""
    readers = spec.world_size * spec.workers
    if spec.shards and len(spec.shards) < readers and sources.is_remote(sources.join(spec.root, spec.shards[0])):
        parts = -(-readers // len(spec.shards))
        log.warning("%s/%s: %d shards for %d readers (%d ranks × %d workers): each shard is read by %d readers, so "
                    "each byte is fetched %d times per epoch; more (smaller) shards than readers fetch it once",
                    spec.root, spec.split, len(spec.shards), readers, spec.world_size, spec.workers, parts, parts)


def leave_signals_to_main(worker_id: int) -> None:
    """DataLoader worker_init_fn. A terminal's Ctrl-C reaches every process of its group, workers too: they leave it
    and SIGTERM to the main process (training saves a checkpoint first: fastasr.training.interrupt), which stops
    them when it is done, instead of each dying with its own traceback."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
