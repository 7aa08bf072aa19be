"""What flows through the loader, one type per point of the flow (DESIGN.md's data flow, top to bottom).

TarGroup (members of one KEY read from a shard) → Sample (metadata parsed: duration, text, token ids; audio still
compressed bytes) → PlannedBatch (samples chosen by the bucketing/budget decision, before any decoding) → Batch
(decoded, padded tensors; the contract of DESIGN.md). EpochEnd is the per-worker marker carrying the skip counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

AUDIO_EXTENSIONS = ("opus", "wav", "flac", "mp3", "ogg")  # what soundfile (libsndfile ≥ 1.1) reads


@dataclass(frozen=True)
class Piece:
    """The part of a shard one worker reads: samples whose ordinal in the shard is ≡ part (mod parts).

    parts == 1 (the whole shard) unless there are fewer shards than reader slots (ranks × workers).
    """

    path: str
    part: int = 0
    parts: int = 1


@dataclass
class TarGroup:
    """The members of one KEY, as read from the tar (audio bytes are b"" when reading metadata only)."""

    key: str
    members: dict[str, bytes]
    shard: str = ""  # the shard's path as the index spells it
    ordinal: int = -1  # the KEY group's position in the shard: with `shard`, what identifies a sample in an epoch
    refused: tuple[str, str] | None = None  # (reason, detail): a member its tar header said not to read


@dataclass
class Sample:
    """One utterance whose metadata is known; the audio is still the original compressed bytes."""

    key: str
    duration: float  # seconds, from the json member: the batching decision is made before decoding
    text: str
    tokens: np.ndarray  # int64 (U,)
    audio_bytes: bytes  # opus | wav | flac | …; soundfile tells them apart by their content
    shard: str = ""
    ordinal: int = -1
    speed: float = 1.0  # speed perturbation factor (duration is already divided by it)


@dataclass
class PlannedBatch:
    """A batch decided from metadata only: what skip_batches skips and what the budget was checked on."""

    epoch: int
    ordinal: int  # position in this worker's epoch
    samples: list[Sample]


@dataclass
class EpochEnd:
    """Sent by each worker after its part of an epoch; the loader aggregates it and never delivers it."""

    epoch: int
    batches: int
    samples: int
    skipped: dict[str, int] = field(default_factory=dict)
    final: bool = False  # the reader stops after this epoch (nothing was planned for it)


@dataclass
class Batch:
    """Padded batch: audio (B, S) float32 zero-padded, tokens (B, U) int64 padded with 0 (the blank)."""

    audio: torch.Tensor  # (B, S) float32
    audio_lens: torch.Tensor  # (B,) int64
    tokens: torch.Tensor  # (B, U) int64
    token_lens: torch.Tensor  # (B,) int64
    keys: list[str]
    texts: list[str]
    epoch: int
    index: int  # batch number within the epoch on this rank

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return replace(
            self,
            audio=self.audio.to(device, non_blocking=non_blocking),
            audio_lens=self.audio_lens.to(device, non_blocking=non_blocking),
            tokens=self.tokens.to(device, non_blocking=non_blocking),
            token_lens=self.token_lens.to(device, non_blocking=non_blocking),
        )

    def __reduce__(self):
        # Through the DataLoader's worker queue every tensor would travel as its own shared-memory block with its
        # own descriptor hand-off; only the audio is worth that: the three small CPU tensors go inline.
        small = [t.numpy() if t.device.type == "cpu" else t for t in (self.audio_lens, self.tokens, self.token_lens)]
        return _rebuild_batch, (self.audio, *small, self.keys, self.texts, self.epoch, self.index)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pinning thread (torch looks for this method)."""
        return replace(
            self,
            audio=self.audio.pin_memory(),
            audio_lens=self.audio_lens.pin_memory(),
            tokens=self.tokens.pin_memory(),
            token_lens=self.token_lens.pin_memory(),
        )


def _rebuild_batch(audio, audio_lens, tokens, token_lens, keys, texts, epoch, index) -> Batch:
    return Batch(audio, torch.as_tensor(audio_lens), torch.as_tensor(tokens), torch.as_tensor(token_lens), keys, texts,
                 epoch, index)
