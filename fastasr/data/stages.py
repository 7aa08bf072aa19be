"""Loader stages: module-level generator functions `stage(items, *, option=…)` (they pickle into workers).

They are composed top to bottom in loader.py. Per-sample work is a plain function applied by `map_samples`, the
only place where a bad sample meets the error policy `handler` (errors.py).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from fastasr.audio_files import PREEMPHASIS, mono_16k  # one definition of the model's audio, shared with transcription
from fastasr.kernels import normalize_preemphasize

from .bucketing import DurationBuckets, PaddedSecondsBudget
from .errors import SampleError
from .sample import AUDIO_EXTENSIONS, Batch, PlannedBatch, Piece, Sample, TarGroup

Handler = Callable[[BaseException, "str | None", str], None]


# --- reading ------------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: KEY / extension split at the first dot of the last path component."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def read_groups(pieces: Iterable[Piece], *, root: Path, handler: Handler, audio: bool = True,
                expected: dict[str, int] | None = None) -> Iterator[TarGroup]:
    """Stream each piece's shard and yield the KEY groups of its part (members of a KEY are adjacent in the tar).

    audio=False reads metadata only: audio members are skipped by seeking (their bytes become b"") — used to plan
    batches without reading or decoding audio. `expected` (shard path → samples, from index.json) catches a shard
    that ends early: tarfile stops silently at a damaged header in mid-file.
    """
    for piece in pieces:
        try:
            found = yield from _groups_of(piece, root, audio)
            want = (expected or {}).get(piece.path)
            if want is not None and found < want:
                raise SampleError("short_shard", f"{piece.path}: {found} of {want} samples readable")
        except (OSError, tarfile.TarError, EOFError, SampleError) as exc:  # unreadable or truncated shard
            reason = exc.reason if isinstance(exc, SampleError) else "bad_shard"
            handler(SampleError(reason, f"{piece.path}: {exc}"), piece.path, "read_tar")


def _groups_of(piece: Piece, root: Path, audio: bool):
    """Yields the part's TarGroups; returns how many samples the shard held."""
    ordinal, key, members = -1, None, {}
    with tarfile.open(root / piece.path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            k, ext = split_name(info.name)
            if k != key:
                if key is not None and ordinal % piece.parts == piece.part:
                    yield TarGroup(key, members)
                ordinal, key, members = ordinal + 1, k, {}
            if ordinal % piece.parts != piece.part:
                continue  # another reader's sample: its bytes are skipped by seeking
            if not audio and ext in AUDIO_EXTENSIONS:
                members[ext] = b""
            else:
                members[ext] = tar.extractfile(info).read()
        if key is not None and ordinal % piece.parts == piece.part:
            yield TarGroup(key, members)
    return ordinal + 1


def map_samples(items: Iterable, fn: Callable, *, handler: Handler, stage: str) -> Iterator:
    """Apply fn to each item; a failing item goes to the error policy (skip and count, or raise)."""
    for item in items:
        try:
            yield fn(item)
        except Exception as exc:
            handler(exc, getattr(item, "key", None), stage)


def parse_sample(group: TarGroup, *, tokenizer) -> Sample:
    """json (duration) + txt (normalised transcript → token ids) + the one audio member."""
    formats = [ext for ext in AUDIO_EXTENSIONS if ext in group.members]
    if len(formats) != 1:
        raise SampleError("no_audio" if not formats else "many_audio", f"members {sorted(group.members)}")
    if "json" not in group.members:
        raise SampleError("no_json")
    if "txt" not in group.members:
        raise SampleError("no_txt")
    try:
        duration = float(json.loads(group.members["json"])["duration"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SampleError("bad_json", str(exc)) from None
    if not (duration > 0 and np.isfinite(duration)):
        raise SampleError("bad_json", f"duration {duration}")
    try:
        text = group.members["txt"].decode("utf-8").strip()
        tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
    except ValueError as exc:
        raise SampleError("bad_text", str(exc)) from None
    if tokens.size == 0:
        raise SampleError("bad_text", "empty transcript")
    fmt = formats[0]
    return Sample(group.key, duration, text, tokens, group.members[fmt])


def filter_duration(samples: Iterable[Sample], *, min_duration: float, max_duration: float | None,
                    handler: Handler) -> Iterator[Sample]:
    for s in samples:
        if s.duration < min_duration or (max_duration is not None and s.duration > max_duration):
            handler(SampleError("duration_filter", f"{s.duration:.3f} s"), s.key, "filter_duration")
        else:
            yield s


# --- order and batching -------------------------------------------------------------------------------------------


def shuffle_buffer(samples: Iterable[Sample], *, size: int, rng: np.random.Generator) -> Iterator[Sample]:
    """Reservoir shuffle: keep `size` samples, emit a random one for each new arrival (size ≤ 1: no shuffling)."""
    if size <= 1:
        yield from samples
        return
    buf: list[Sample] = []
    for s in samples:
        if len(buf) < size:
            buf.append(s)
            continue
        i = int(rng.integers(size))
        buf[i], s = s, buf[i]
        yield s
    rng.shuffle(buf)
    yield from buf


def bucket_batches(samples: Iterable[Sample], *, buckets: DurationBuckets, budget: PaddedSecondsBudget,
                   epoch: int, rng: np.random.Generator | None = None) -> Iterator[PlannedBatch]:
    """Each sample joins the open batch of its duration bucket; a batch is emitted when the next sample would break
    the budget, or as soon as no further sample could join (the longest never shrinks). Leftovers are emitted at
    the end, in random order when `rng` is given (else by bucket)."""
    open_: dict[int, list[Sample]] = {}
    longest: dict[int, float] = {}
    ordinal = 0
    for s in samples:
        b = buckets.index(s.duration)
        batch = open_.setdefault(b, [])
        new_longest = max(longest.get(b, 0.0), s.duration)
        if batch and not budget.admits(len(batch) + 1, new_longest):
            yield PlannedBatch(epoch, ordinal, batch)
            ordinal += 1
            batch = open_[b] = []
            new_longest = s.duration
        batch.append(s)
        longest[b] = new_longest
        if not budget.admits(len(batch) + 1, new_longest):  # full: no further sample could join
            yield PlannedBatch(epoch, ordinal, batch)
            ordinal += 1
            open_[b], longest[b] = [], 0.0
    left = [b for b in sorted(open_) if open_[b]]
    if rng is not None:
        rng.shuffle(left)
    for b in left:
        yield PlannedBatch(epoch, ordinal, open_[b])
        ordinal += 1


# --- decoding and padding -----------------------------------------------------------------------------------------


def decode_audio(sample: Sample) -> np.ndarray:
    """Compressed bytes → float32 mono 16 kHz, peak-normalised then pre-emphasised (the Numba kernel)."""
    try:
        x, sr = sf.read(io.BytesIO(sample.audio_bytes), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's errors carry no useful type
        raise SampleError("decode", str(exc)) from None
    x = mono_16k(x, sr)
    if x.size < 2:
        raise SampleError("too_short", f"{x.size} samples after decoding")
    try:
        return normalize_preemphasize(x, PREEMPHASIS)  # the kernel checks finiteness in its own pass
    except ValueError as exc:
        raise SampleError("decode", str(exc)) from None


def warm_up() -> None:
    """Load the Numba kernel in this process so that forked DataLoader workers inherit it compiled."""
    normalize_preemphasize(np.array([0.5, -0.25], dtype=np.float32))


def decode_batches(batches: Iterable[PlannedBatch], *, handler: Handler) -> Iterator[tuple[PlannedBatch, list]]:
    """Decode every sample of each planned batch; a sample that fails is dropped from its batch (and counted)."""
    for planned in batches:
        decoded = []
        for s in planned.samples:
            try:
                decoded.append((s, decode_audio(s)))
            except Exception as exc:
                handler(exc, s.key, "decode")
        if decoded:
            yield planned, decoded
        else:
            handler(SampleError("empty_batch", f"all {len(planned.samples)} samples failed"), None, "decode")


def pad_batch(item: tuple[PlannedBatch, list]) -> Batch:
    """Pad audio (zeros) and token ids (0) to the batch's own longest; the loader numbers the batch (index)."""
    import torch

    planned, decoded = item
    n = len(decoded)
    audio_lens = np.fromiter((a.size for _, a in decoded), dtype=np.int64, count=n)
    token_lens = np.fromiter((s.tokens.size for s, _ in decoded), dtype=np.int64, count=n)
    audio = np.zeros((n, int(audio_lens.max())), dtype=np.float32)  # (B, S)
    tokens = np.zeros((n, int(token_lens.max())), dtype=np.int64)  # (B, U)
    for i, (s, a) in enumerate(decoded):
        audio[i, : a.size] = a
        tokens[i, : s.tokens.size] = s.tokens
    return Batch(
        audio=torch.from_numpy(audio),
        audio_lens=torch.from_numpy(audio_lens),
        tokens=torch.from_numpy(tokens),
        token_lens=torch.from_numpy(token_lens),
        keys=[s.key for s, _ in decoded],
        texts=[s.text for s, _ in decoded],
        epoch=planned.epoch,
        index=-1,
    )
