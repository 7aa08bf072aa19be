"""Train/val/test assignment by a salted hash of the KEY, and the cut of each split into shards.

The split of a key depends on nothing but (seed, key, fractions): adding utterances later never moves an old one.
Shards are cut from the sorted keys of each split (corpus.plan), so a rerun (or another machine with `--part`) computes exactly
the same plan from the same listing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fastasr.errors import UserError

SPLITS = ("train", "val", "test")


def parse_fractions(spec: str) -> dict[str, float]:
    """'0.6,0.2,0.2' → {'train': 0.6, 'val': 0.2, 'test': 0.2}. Fractions must sum to 1: 0.7,0.2,0.2 is a typo,
    not a request to rescale. Whole-number proportions (6,2,2) are normalised, as they cannot be mistaken."""
    try:
        values = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UserError(f"--split wants three numbers like 0.6,0.2,0.2, got {spec!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise UserError(f"--split wants three non-negative numbers with a positive sum, got {spec!r}")
    total = sum(values)
    if abs(total - 1) > 1e-6 and not all(v.is_integer() for v in values):
        raise UserError(f"--split fractions must sum to 1, got {spec!r} (sum {total:g}); give e.g. 0.6,0.2,0.2, "
                        f"or whole-number proportions like 6,2,2")
    return {name: v / total for name, v in zip(SPLITS, values)}


def split_digest(key: str, seed: int) -> bytes:
    """The 8 bytes the split of (seed, key) is drawn from."""
    return hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()


def hash_unit(key: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, key)."""
    return int.from_bytes(split_digest(key, seed), "big") / 2**64


def _edges(fractions: dict[str, float]) -> list[float]:
    edges, edge = [], 0.0
    for name in SPLITS[:-1]:
        edge += fractions[name]
        edges.append(edge)
    return edges


def assign_split(key: str, seed: int, fractions: dict[str, float]) -> str:
    u = hash_unit(key, seed)
    for name, edge in zip(SPLITS, _edges(fractions)):
        if u < edge:
            return name
    return SPLITS[-1]


def split_codes(digests: bytes, fractions: dict[str, float]) -> np.ndarray:
    """assign_split for many keys at once: their split_digest()s end to end → each one's index in SPLITS (int8).
    The digest as a float64 is the quotient hash_unit computes (both round the 64-bit integer to nearest, and
    dividing by 2**64 is exact), so the codes are assign_split's."""
    units = np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2**64
    return np.searchsorted(np.array(_edges(fractions)), units, side="right").astype(np.int8)


@dataclass(frozen=True, eq=False)  # rows is an array: no field-wise == or hash
class ShardPlan:
    """One shard to write: its path relative to OUT and the input rows (indices into the listing) it holds."""

    split: str
    number: int
    rows: Sequence[int]  # a slice of the plan's array of row numbers (corpus.plan)

    @property
    def path(self) -> str:
        return f"{self.split}/shard-{self.number:06d}.tar"


def parse_part(spec: str | None) -> tuple[int, int]:
    """'2/4' → (2, 4). Part numbers are 1-based; from a 0-based job array: `--part $((SLURM_ARRAY_TASK_ID + 1))/N`."""
    if spec is None:
        return 1, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--part wants I/N like 2/4, got {spec!r}") from None
    if not 1 <= i <= n:
        raise UserError(f"--part I/N needs 1 <= I <= N (parts are numbered from 1), got {spec!r}")
    return i, n


def shards_of_part(plans: list[ShardPlan], part: int, parts: int) -> list[ShardPlan]:
    """Round-robin over the global shard list, so every part gets a share of every split."""
    return [p for k, p in enumerate(plans) if k % parts == part - 1]
