"""Loader stages: module-level generator functions `stage(items, *, option=…)` (they pickle into workers).

They are composed top to bottom in loader.py. Per-sample work is a plain function applied by `map_samples`, the
only place where a bad sample meets the error policy `handler` (errors.py).
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from fastasr import sources
from fastasr.audio.files import condition, mono_16k  # one definition of the model's audio, shared with transcription
from fastasr.kernels import normalize_preemphasize
# WebDataset's KEY/extension rule and the bounds on what a member may claim, shared with `fastasr index`
from fastasr.shards.scan import member_limit, refuse_member, split_name
from fastasr.text.normalization import TextConfig, TextRejected, normalize

from .bucketing import DurationBuckets, PaddedSecondsBudget
from .durations import durations_table
from .errors import SampleError
from .sample import AUDIO_EXTENSIONS, Batch, Piece, PlannedBatch, Sample, TarGroup

Handler = Callable[[BaseException, "str | None", str], None]


# --- reading ------------------------------------------------------------------------------------------------------


def read_groups(pieces: Iterable[Piece], *, root: str, handler: Handler, audio: bool = True,
                expected: dict[str, int] | None = None,
                exclude: dict[str, Collection[int]] | None = None) -> Iterator[TarGroup]:
    """Stream each piece's shard and yield the KEY groups of its part (members of a KEY are adjacent in the tar).

    Shards open through fastasr.sources (local, pipe:, http(s), s3, gs, …) relative to `root`, the index's
    directory or URL prefix. audio=False reads metadata only: audio members are skipped (by seeking where the
    stream can seek) and their bytes become b"". `expected` (shard path → KEY groups, from index.json) catches a
    shard that ends early: tarfile stops silently at a damaged header in mid-file. `exclude` (shard path → group
    ordinals) leaves out samples already delivered in this epoch by a run with another world size (or not wanted);
    a piece with every sample excluded is not opened.
    """
    for piece in pieces:
        excluded = (exclude or {}).get(piece.path, frozenset())
        want = (expected or {}).get(piece.path)
        if want is not None and excluded and all(i in excluded for i in range(piece.part, want, piece.parts)):
            continue  # nothing of this part is wanted: the shard is not opened
        try:
            found = yield from _groups_of(piece, root, audio, excluded)
            if want is not None and found < want:
                raise SampleError("short_shard", f"{piece.path}: {found} of {want} samples readable")
        except (OSError, tarfile.TarError, EOFError, SampleError) as exc:  # unreadable or truncated shard
            reason = exc.reason if isinstance(exc, SampleError) else "bad_shard"
            handler(SampleError(reason, f"{sources.describe(sources.join(root, piece.path))}: {exc}"), piece.path,
                    "read_tar")


def _groups_of(piece: Piece, root: str, audio: bool, excluded: Collection[int]):
    """Yields the part's TarGroups; returns how many KEY groups the shard held. A member is read only once its
    header passed refuse_member (a group with a refused member carries the refusal, for parse_text to raise);
    members nothing reads (another extension) and audio in metadata mode become b"" unread."""
    ordinal, key, members, refused = -1, None, {}, None

    def mine(i: int) -> bool:
        return i % piece.parts == piece.part and i not in excluded

    url = sources.join(root, piece.path)
    with sources.open_input(url) as f:
        with tarfile.open(fileobj=f, mode="r:" if f.seekable() else "r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = split_name(info.name)
                if k != key:
                    if key is not None and mine(ordinal):
                        yield TarGroup(key, members, piece.path, ordinal, refused)
                    ordinal, key, members, refused = ordinal + 1, k, {}, None
                if not mine(ordinal):
                    continue  # another reader's sample: its bytes are skipped (by seeking, where possible)
                refused = refused or refuse_member(info, ext)
                if refused or member_limit(ext) is None or (not audio and ext in AUDIO_EXTENSIONS):
                    members[ext] = b""
                else:
                    members[ext] = tar.extractfile(info).read()
            if key is not None and mine(ordinal):
                yield TarGroup(key, members, piece.path, ordinal, refused)
    return ordinal + 1


def map_samples(items: Iterable, fn: Callable, *, handler: Handler, stage: str) -> Iterator:
    """Apply fn to each item; a failing item goes to the error policy (skip and count, or raise)."""
    for item in items:
        try:
            yield fn(item)
        except Exception as exc:
            handler(exc, getattr(item, "key", None), stage)


@dataclass(frozen=True)
class SampleFormat:
    """How a KEY group's members become a Sample. fastasr's own shards: the .txt is normalised already and the
    .json holds the duration. Shards other tools wrote (indexed by `fastasr index`): the transcript is the .txt or a
    .json field, normalised here with the index's rules, and the duration comes from the index's durations table."""

    transcript: str = "txt"  # "txt" or "json:FIELD"
    text: TextConfig | None = None  # normalise with these rules; None: already normalised
    durations: str | None = None  # URL of the durations table (durations.py); None: the .json member's duration


OWN_SHARDS = SampleFormat()


def parse_sample(group: TarGroup, *, tokenizer, fmt: SampleFormat = OWN_SHARDS) -> Sample:
    """Duration + transcript (→ token ids) + the one audio member."""
    duration, text, audio_ext = parse_text(group, fmt)
    try:
        tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
    except ValueError as exc:
        raise SampleError("bad_text", str(exc)) from None
    if tokens.size == 0:
        raise SampleError("bad_text", "empty transcript")
    return Sample(group.key, duration, text, tokens, group.members[audio_ext], group.shard, group.ordinal)


def parse_text(group: TarGroup, fmt: SampleFormat = OWN_SHARDS) -> tuple[float, str, str]:
    """(duration, normalised transcript, the audio member's extension) of a KEY group, or a SampleError."""
    if group.refused is not None:
        raise SampleError(*group.refused)
    formats = [ext for ext in AUDIO_EXTENSIONS if ext in group.members]
    if len(formats) != 1:
        raise SampleError("no_audio" if not formats else "many_audio", f"members {sorted(group.members)}")
    meta = None
    if "json" in group.members:
        try:
            meta = json.loads(group.members["json"])
        except ValueError as exc:
            raise SampleError("bad_json", str(exc)) from None
    if fmt.durations is not None:
        duration = durations_table(fmt.durations).get(group.shard, group.ordinal)
        if duration is None:
            raise SampleError("rejected_at_index", "listed in rejected.tsv by `fastasr index`")
    else:
        if meta is None:
            raise SampleError("no_json")
        try:
            duration = float(meta["duration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SampleError("bad_json", str(exc)) from None
    if not (duration > 0 and np.isfinite(duration)):
        raise SampleError("bad_json", f"duration {duration}")
    return duration, _transcript(group, meta, fmt), formats[0]


def _transcript(group: TarGroup, meta: dict | None, fmt: SampleFormat) -> str:
    if fmt.transcript == "txt":
        if "txt" not in group.members:
            raise SampleError("no_txt")
        try:
            raw = group.members["txt"].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SampleError("bad_text", str(exc)) from None
    else:
        field = fmt.transcript.partition(":")[2]
        raw = meta.get(field) if isinstance(meta, dict) else None
        if not isinstance(raw, str):
            raise SampleError("no_text_field", f"no string field {field!r} in the json member")
    if fmt.text is None:
        return raw.strip()
    try:
        return normalize(raw, fmt.text)
    except TextRejected as exc:
        raise SampleError(exc.reason, exc.detail) from None


def table_samples(pieces: Iterable[Piece], table, *, exclude: dict[str, Collection[int]] | None = None
                  ) -> Iterator[Sample]:
    """The samples of `pieces` as planning sees them, from the durations table alone (no shard opened): the same
    sequence read_groups + parse_sample give for intact shards, without text, tokens or audio. Unusable samples
    (null) are left out, as the reader skips them."""
    empty = np.zeros(0, dtype=np.int64)
    for piece in pieces:
        excluded = (exclude or {}).get(piece.path, frozenset())
        values = table.shards.get(piece.path, [])
        for ordinal in range(piece.part, len(values), piece.parts):
            d = values[ordinal]
            if d is not None and ordinal not in excluded:
                yield Sample(f"{piece.path}#{ordinal}", float(d), "", empty, b"", piece.path, ordinal)


def _mix(*values: int) -> int:
    """splitmix64 over the values: a cheap, well-spread hash that is the same in every process and run."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h


def perturb_speed(samples: Iterable[Sample], *, factors: tuple[float, ...], seed: int, epoch: int
                  ) -> Iterator[Sample]:
    """Speed perturbation (Kaldi / Lhotse style: resampled, so tempo and pitch change together): each sample gets
    one of `factors`, drawn from (seed, epoch, shard, ordinal) — the same draw wherever and whenever the sample is
    read, so resume plans agree — and its duration becomes duration / factor before bucketing sees it."""
    for s in samples:
        f = factors[_mix(seed, epoch, zlib.crc32(s.shard.encode()), s.ordinal) % len(factors)]
        if f != 1.0:
            s.speed, s.duration = f, s.duration / f
        yield s


def filter_duration(samples: Iterable[Sample], *, min_duration: float, max_duration: float | None,
                    handler: Handler) -> Iterator[Sample]:
    """Samples of planned duration in [min_duration, max_duration]; the rest are counted as too_short / too_long
    (decode_audio checks max_duration again on the audio header)."""
    for s in samples:
        if s.duration < min_duration:
            handler(SampleError("too_short", f"{s.duration:.3f} s (min_duration {min_duration:g} s)"), s.key,
                    "filter_duration")
        elif max_duration is not None and s.duration > max_duration:
            handler(SampleError("too_long", f"{s.duration:.3f} s (max_duration {max_duration:g} s)"), s.key,
                    "filter_duration")
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


# What a sample's audio header may say before it is decoded: decoding allocates what the header claims (frames ×
# channels), so the claim must agree with the planned duration the batch budget was checked on (KEY.json or the
# durations table, themselves the headers' frames / rate when the shard or index was written) within
# max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION × planned): room for encoders' padding and rounded
# manifests, none for a one-hour file listed as 1.5 s. Sample rates outside SAMPLE_RATES and more than
# MAX_CHANNELS channels (a multi-microphone array at most) are no speech recording the loader should decode.
DURATION_TOLERANCE_S = 0.1
DURATION_TOLERANCE_FRACTION = 0.02
SAMPLE_RATES = (1_000, 192_000)  # Hz, inclusive
MAX_CHANNELS = 16


def decode_audio(sample: Sample, max_duration: float | None = None, waveform: str = "peak_preemphasis") -> np.ndarray:
    """Compressed bytes → float32 mono 16 kHz, conditioned for the model's front end (fastasr.audio.files.condition:
    peak-normalised then pre-emphasised by the Numba kernel, or raw).

    The header is checked first (check_header; `max_duration`: seconds, as stored, before speed perturbation);
    libsndfile then reads at most the frames it claims."""
    try:
        with sf.SoundFile(io.BytesIO(sample.audio_bytes)) as f:
            check_header(f.frames, f.samplerate, f.channels, sample, max_duration)
            x, sr = f.read(dtype="float32", always_2d=True), f.samplerate
    except SampleError:
        raise
    except Exception as exc:  # libsndfile's errors carry no useful type
        raise SampleError("decode", str(exc)) from None
    x = mono_16k(x, sr * sample.speed)  # read at speed × its rate, resampled to 16 kHz: 1/speed as long
    if x.size < 2:
        raise SampleError("too_short", f"{x.size} samples after decoding")
    try:
        return condition(x, waveform)  # finiteness checked in the same pass
    except ValueError as exc:
        raise SampleError("decode", str(exc)) from None


def check_header(frames: int, rate: int, channels: int, sample: Sample, max_duration: float | None) -> None:
    """SampleError unless the header's rate and channels are in range, its duration is the planned one (within the
    tolerance) and at most max_duration."""
    if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise SampleError("bad_sample_rate", f"{rate} Hz (accepted: {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz)")
    if channels > MAX_CHANNELS:
        raise SampleError("too_many_channels", f"{channels} channels (accepted: up to {MAX_CHANNELS})")
    seconds, planned = frames / rate, sample.duration * sample.speed  # as stored: perturbation divided the plan's
    if abs(seconds - planned) > max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION * planned):
        raise SampleError("duration_mismatch", f"the audio header holds {seconds:.3f} s, the plan {planned:.3f} s")
    if max_duration is not None and seconds > max_duration:
        raise SampleError("too_long", f"{seconds:.3f} s (max_duration {max_duration:g} s)")


def warm_up() -> None:
    """Load the Numba kernel in this process so that forked DataLoader workers inherit it compiled."""
    normalize_preemphasize(np.array([0.5, -0.25], dtype=np.float32))


def decode_batches(batches: Iterable[PlannedBatch], *, handler: Handler, max_duration: float | None = None,
                   waveform: str = "peak_preemphasis") -> Iterator[tuple[PlannedBatch, list]]:
    """Decode every sample of each planned batch; a sample that fails is dropped from its batch (and counted)."""
    for planned in batches:
        decoded = []
        for s in planned.samples:
            try:
                decoded.append((s, decode_audio(s, max_duration, waveform)))
            except Exception as exc:
                handler(exc, s.key, "decode")
        if decoded:
            yield planned, decoded
        else:
            handler(SampleError("empty_batch", "no sample of the planned batch could be used"), None, "decode")


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
