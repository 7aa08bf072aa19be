"""Bucket choice and "is the batch full" as two separate objects (lhotse's SamplingConstraint idea).

DurationBuckets picks a bucket by bisecting duration edges; PaddedSecondsBudget decides whether a batch of n
utterances whose longest lasts `longest` seconds still fits (cost = n × longest: the padded seconds the GPU sees).
bucket_batches (a stage in stages.py) combines them.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass


def geometric_edges(lo: float = 0.25, hi: float = 40.0, ratio: float = 1.03) -> tuple[float, ...]:
    """Edges lo, lo·r, lo·r², … up to hi. Within a bucket the longest is at most r × the shortest, so the padded
    fraction of a batch is at most 1 - 1/r and about (r-1)/(2r) on average (1.5 % at r = 1.03)."""
    if not (0 < lo < hi and ratio > 1):
        raise ValueError(f"need 0 < lo < hi and ratio > 1, got lo={lo} hi={hi} ratio={ratio}")
    n = math.ceil(math.log(hi / lo) / math.log(ratio))
    return tuple(lo * ratio**i for i in range(n + 1))


@dataclass(frozen=True)
class DurationBuckets:
    """Bucket i holds durations in [edges[i-1], edges[i]); bucket 0 is below edges[0], the last one above edges[-1]."""

    edges: tuple[float, ...] = geometric_edges()

    def __post_init__(self):
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"bucket edges must increase strictly: {self.edges}")

    def index(self, duration: float) -> int:
        return bisect_right(self.edges, duration)


@dataclass(frozen=True)
class PaddedSecondsBudget:
    """A batch may hold n utterances whose longest lasts `longest` s while n × longest ≤ max_seconds.

    A single utterance is always admitted (alone) even when it is longer than the budget: dropping over-long
    utterances is a separate, explicit choice (build_loader's max_duration).
    """

    max_seconds: float
    max_samples: int | None = None

    def __post_init__(self):
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be ≥ 1, got {self.max_samples}")

    @staticmethod
    def cost(n: int, longest: float) -> float:
        return n * longest

    def admits(self, n: int, longest: float) -> bool:
        """Whether a batch of n utterances (longest `longest` s) is within the budget."""
        if n <= 1:
            return True
        if self.max_samples is not None and n > self.max_samples:
            return False
        return self.cost(n, longest) <= self.max_seconds
