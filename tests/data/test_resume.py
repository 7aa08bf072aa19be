"""Resume planning from the durations table, continuing an epoch under another world size, speed perturbation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from data_shards import make_utts, write_shards
from hypothesis import given, settings
from hypothesis import strategies as st

from fastasr import sources
from fastasr.data import build_loader
from fastasr.data.durations import durations_table

KW = dict(max_batch_seconds=3.0, seed=9, shuffle_buffer=8)


@pytest.fixture(scope="module")
def utts():
    return make_utts(44, seed=6)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, utts):
    """The same shards with a durations table and without one (an index written before the tables existed)."""
    out = {}
    for table in (True, False):
        d = tmp_path_factory.mktemp(f"table_{table}")
        write_shards(d, utts, [6, 5, 7, 6, 5, 6, 4, 5], durations=table)
        out[table] = d
    return out


def keys(loader) -> list[list[str]]:
    return [b.keys for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_table_plan_equals_the_tar_plan(dirs, workers):
    assert keys(build_loader(dirs[True], num_workers=workers, **KW)) == \
        keys(build_loader(dirs[False], num_workers=workers, **KW))


def test_resume_deep_in_the_epoch_opens_no_consumed_shard(dirs, monkeypatch):
    full = keys(build_loader(dirs[True], num_workers=0, **KW))
    opened = Counter()
    real_open = sources.open_input

    def counting(url):
        opened[str(url).rsplit("/", 1)[-1]] += 1
        return real_open(url)

    monkeypatch.setattr(sources, "open_input", counting)
    durations_table.cache_clear()  # read once per process: count this loader's read
    skip = len(full) - 2
    resumed = keys(build_loader(dirs[True], num_workers=0, skip_batches=skip, **KW))
    assert resumed == full[skip:]
    tars = {k for k in opened if k.endswith(".tar")}
    last_keys = {k for batch in full[skip:] for k in batch}
    # Only shards holding a sample of the two remaining batches are read; the plan read the table alone.
    holders = {f"shard-{i:06d}.tar" for i, n in enumerate([6, 5, 7, 6, 5, 6, 4, 5])
               if any(k in last_keys for k in _keys_of_shard(dirs[True], i))}
    assert tars == holders and len(tars) < 8
    assert opened["durations-train.json"] == 1


def _keys_of_shard(root, i):
    import tarfile

    with tarfile.open(root / f"train/shard-{i:06d}.tar") as tar:
        return {m.name.rsplit(".", 1)[0] for m in tar.getmembers()}


def _deliver(root, world, workers, batches_per_rank, infinite=False):
    """What `world` ranks deliver in their first batches; their positions and stream state, as a checkpoint has."""
    delivered, positions, state = [], [], None
    for rank in range(world):
        loader = build_loader(root, num_workers=workers, rank=rank, world_size=world, infinite=infinite, **KW)
        for i, b in enumerate(loader):
            delivered += [(b.epoch, k) for k in b.keys]
            if i + 1 == batches_per_rank[rank]:
                break
        positions.append({"epoch": loader.position()["epoch"], "batches": loader.position()["skip_batches"]})
        state = loader.stream_state()
    return delivered, positions, state


@pytest.mark.parametrize("table", [True, False])
@pytest.mark.parametrize("new_world", [1, 3])
def test_an_epoch_continues_under_another_world_size(dirs, utts, table, new_world):
    before, positions, state = _deliver(dirs[table], 2, 2, [3, 2])
    after = []
    for rank in range(new_world):
        loader = build_loader(dirs[table], num_workers=2, rank=rank, world_size=new_world,
                              continue_from=(state, positions), **KW)
        after += [(b.epoch, k) for b in loader for k in b.keys]
    everything = [k for _, k in before + after]
    assert len(everything) == len(set(everything)), "an utterance delivered twice"
    assert sorted(everything) == sorted(u.key for u in utts), "an utterance skipped"
    assert before and after


def test_continuing_twice_and_across_an_epoch_boundary(dirs, utts):
    """Infinite mode: 2 ranks run until some readers are in epoch 1; 3 ranks go on for a batch each; 1 rank then
    finishes epoch 0, which holds every utterance exactly once across the three runs."""
    root = dirs[True]
    n_batches = len(keys(build_loader(root, num_workers=2, rank=0, world_size=2, **KW)))
    first, positions, state = _deliver(root, 2, 2, [n_batches + 1, n_batches], infinite=True)
    assert {e for e, _ in first} == {0, 1}
    second, positions_3, state_3 = [], [], None
    for rank in range(3):
        loader = build_loader(root, num_workers=1, rank=rank, world_size=3, infinite=True,
                              continue_from=(state, positions), **KW)
        assert loader.epoch == 0
        for b in loader:
            second += [(b.epoch, k) for k in b.keys]
            break
        positions_3.append({"epoch": loader.position()["epoch"], "batches": loader.position()["skip_batches"]})
        state_3 = loader.stream_state()
    third = build_loader(root, num_workers=0, rank=0, world_size=1, continue_from=(state_3, positions_3), **KW)
    rest = [(b.epoch, k) for b in third for k in b.keys]
    epoch0 = [k for e, k in first + second + rest if e == 0]
    assert len(epoch0) == len(set(epoch0)) and sorted(epoch0) == sorted(u.key for u in utts)
    epoch1 = [k for e, k in first + second if e == 1]  # readers with nothing left of epoch 0 went on
    assert len(epoch1) == len(set(epoch1))


def test_speed_perturbation_resamples_and_resumes_exactly(dirs, utts):
    factors = (0.9, 1.0, 1.1)
    plain = {k: int(b.audio_lens[i]) for b in build_loader(dirs[True], num_workers=0, **KW)
             for i, k in enumerate(b.keys)}
    loader = build_loader(dirs[True], num_workers=2, speed_perturb=factors, **KW)
    batches = [(b.keys, b.audio_lens.tolist()) for b in loader]
    ratios = [plain[k] / n for ks, lens in batches for k, n in zip(ks, lens)]
    # Each sample plays at one of the factors: its length is the plain length / factor (within a sample).
    nearest = [min(factors, key=lambda f: abs(r - f)) for r in ratios]
    assert all(abs(r - f) < 0.01 for r, f in zip(ratios, nearest))
    assert set(nearest) == set(factors)
    assert sorted(k for ks, _ in batches for k in ks) == sorted(u.key for u in utts)
    assert batches == [(b.keys, b.audio_lens.tolist()) for b in
                       build_loader(dirs[True], num_workers=2, speed_perturb=factors, **KW)]
    other_epoch = build_loader(dirs[True], num_workers=2, speed_perturb=factors, epoch=1, **KW)
    lens1 = {k: n for b in other_epoch for k, n in zip(b.keys, b.audio_lens.tolist())}
    assert lens1 != {k: n for ks, lens in batches for k, n in zip(ks, lens)}  # drawn again each epoch
    for skip in (1, len(batches) // 2):
        resumed = build_loader(dirs[True], num_workers=2, speed_perturb=factors, skip_batches=skip, **KW)
        assert [(b.keys, b.audio_lens.tolist()) for b in resumed] == batches[skip:]


def test_speed_perturbed_budget_counts_the_new_durations(dirs):
    for b in build_loader(dirs[True], num_workers=0, speed_perturb=(0.9,), **KW):
        longest = float(b.audio_lens.max()) / 16000
        assert len(b) * longest <= KW["max_batch_seconds"] + 1e-3
    assert np.isfinite(longest)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2100), max_size=60))
def test_ordinals_bitmap_is_the_set(ordinals):
    """The exclusions' bitmap against a Python set of the same ordinals: membership, iteration, size, equality."""
    import pickle

    from fastasr.data.resume import Ordinals

    got, want = Ordinals(ordinals), set(ordinals)
    assert list(got) == sorted(want) and len(got) == len(want) and got == want
    assert all((i in got) == (i in want) for i in range(-3, 2110))
    assert pickle.loads(pickle.dumps(got)) == got and hash(Ordinals(sorted(want))) == hash(got)
