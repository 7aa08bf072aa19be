"""Bucket choice and the padded-seconds budget, alone and combined (hypothesis properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastasr.data.bucketing import DurationBuckets, PaddedSecondsBudget, geometric_edges
from fastasr.data.distributed import pieces_for
from fastasr.data.sample import Sample
from fastasr.data.stages import bucket_batches, shuffle_buffer

durations = st.lists(st.floats(0.05, 30.0, allow_nan=False), min_size=0, max_size=300)


def fake(i: int, d: float) -> Sample:
    return Sample(f"k{i}", d, "а", np.ones(1, np.int64), b"")


@settings(max_examples=200, deadline=None)
@given(durations, st.floats(0.5, 120.0), st.sampled_from([None, 1, 3, 16]), st.floats(1.01, 1.5))
def test_batches_within_budget_one_bucket_each_sample_once(ds, max_seconds, max_samples, ratio):
    buckets = DurationBuckets(geometric_edges(0.25, 40.0, ratio))
    budget = PaddedSecondsBudget(max_seconds, max_samples)
    samples = [fake(i, d) for i, d in enumerate(ds)]
    batches = list(bucket_batches(iter(samples), buckets=buckets, budget=budget, epoch=0,
                                  rng=np.random.default_rng(0)))
    assert sorted(s.key for b in batches for s in b.samples) == sorted(s.key for s in samples)
    assert [b.ordinal for b in batches] == list(range(len(batches)))
    for b in batches:
        n, longest = len(b.samples), max(s.duration for s in b.samples)
        assert n == 1 or n * longest <= max_seconds  # padded cost within budget
        assert max_samples is None or n <= max_samples
        assert len({buckets.index(s.duration) for s in b.samples}) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=1, max_size=20, unique=True).map(sorted),
       st.floats(0.0, 120.0, allow_nan=False))
def test_bucket_index_bisects_edges(edges, d):
    b = DurationBuckets(tuple(edges)).index(d)
    assert 0 <= b <= len(edges)
    assert b == 0 or edges[b - 1] <= d
    assert b == len(edges) or d < edges[b]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.floats(0.01, 10.0))
def test_budget_admits(n, longest):
    budget = PaddedSecondsBudget(10.0)
    assert budget.admits(1, 1e9)
    assert budget.admits(n, longest) == (n == 1 or n * longest <= 10.0)


def test_budget_and_edges_validate():
    with pytest.raises(ValueError):
        PaddedSecondsBudget(0.0)
    with pytest.raises(ValueError):
        DurationBuckets((1.0, 1.0))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), st.integers(1, 4), st.integers(1, 4), st.integers(0, 5), st.booleans())
def test_pieces_cover_every_shard_once(n_shards, world, workers, epoch, shuffle):
    """Pieces of all ranks and workers are disjoint and cover each shard's parts exactly once."""
    shards = [f"s{i}" for i in range(n_shards)]
    got = [p for r in range(world) for w in range(workers)
           for p in pieces_for(shards, epoch=epoch, seed=3, shuffle=shuffle, rank=r, world_size=world, role=w,
                               workers=workers)]
    assert len(got) == len(set(got))
    for s in shards:
        mine = [p for p in got if p.path == s]
        assert sorted(p.part for p in mine) == list(range(mine[0].parts))
    if n_shards:  # every slot reads something
        assert all(pieces_for(shards, epoch=epoch, seed=3, shuffle=shuffle, rank=r, world_size=world, role=w,
                              workers=workers) for r in range(world) for w in range(workers))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 50), st.integers(0, 20), st.integers(0, 3))
def test_shuffle_buffer_is_a_permutation(n, size, seed):
    items = list(range(n))
    out = list(shuffle_buffer(iter(items), size=size, rng=np.random.default_rng(seed)))
    assert sorted(out) == items
