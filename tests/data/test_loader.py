"""build_loader end to end on tiny shards made in tmp_path: exactly once, audio numbers, determinism, resume, errors."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import soxr
from data_shards import make_utts, write_shards
from optional import librosa

from fastasr.data import Batch, build_loader
from fastasr.errors import UserError
from fastasr.text.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def utts():
    return make_utts(29, seed=3)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, utts):
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, utts, [8, 11, 3, 7])  # 4 uneven shards: not divisible by 3 slots, fewer than 6
    return out


def keys_of(loader) -> list[list[str]]:
    return [b.keys for b in loader]


def flat(batches: list[list[str]]) -> list[str]:
    return [k for b in batches for k in b]


def test_raw_waveform_is_the_decoded_audio_as_it_is(shard_dir, utts):
    """waveform="raw" (the kaldi front end's): mono 16 kHz as decoded, neither peak-normalised nor pre-emphasised."""
    by_key = {u.key: u for u in utts}
    seen = 0
    for b in build_loader(shard_dir, max_batch_seconds=3.0, num_workers=0, seed=0, waveform="raw"):
        for i, key in enumerate(b.keys):
            x, sr = sf.read(io.BytesIO(by_key[key].audio), dtype="float32", always_2d=True)
            ref = librosa.to_mono(x.T)
            ref = soxr.resample(ref, sr, 16000) if sr != 16000 else ref
            n = int(b.audio_lens[i])
            assert n == ref.size and np.abs(b.audio[i, :n].numpy() - ref).max() <= 1e-5
            seen += 1
    assert seen == len(utts)
    with pytest.raises(ValueError, match="waveform must be one of"):
        build_loader(shard_dir, max_batch_seconds=3.0, num_workers=0, waveform="peak")


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_one_epoch_every_utterance_once(shard_dir, utts, num_workers):
    got = flat(keys_of(build_loader(shard_dir, max_batch_seconds=4.0, num_workers=num_workers, seed=5)))
    assert sorted(got) == sorted(u.key for u in utts)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("world_size,num_workers", [(2, 1), (2, 2), (3, 2), (4, 3)])
def test_ranks_partition_the_epoch(shard_dir, utts, world_size, num_workers):
    """Across ranks (and workers, up to 12 slots for 4 shards) every utterance once; each rank's run ends."""
    parts = [flat(keys_of(build_loader(shard_dir, max_batch_seconds=4.0, num_workers=num_workers, seed=2,
                                       rank=r, world_size=world_size, epoch=1))) for r in range(world_size)]
    assert sorted(flat(parts)) == sorted(u.key for u in utts)
    assert all(parts), [len(p) for p in parts]  # more slots than shards: shards are split, no rank idles


def test_rank_with_no_data_ends(tmp_path):
    write_shards(tmp_path, make_utts(1), [1])
    parts = [flat(keys_of(build_loader(tmp_path, max_batch_seconds=4.0, num_workers=2, rank=r, world_size=2)))
             for r in range(2)]
    assert sorted(map(len, parts)) == [0, 1]
    with pytest.raises(UserError, match="no data for rank 1, its epoch 0 delivered no batch"):
        next(iter(build_loader(tmp_path, max_batch_seconds=4.0, num_workers=0, rank=1, world_size=2,
                               infinite=True)))


def reference_audio(u) -> np.ndarray:
    """Independent path: decode → mono → 16 kHz (soxr) → librosa normalise + pre-emphasis."""
    x, sr = sf.read(io.BytesIO(u.audio), dtype="float32", always_2d=True)
    x = librosa.to_mono(x.T)
    if sr != 16000:
        x = soxr.resample(x, sr, 16000)
    return librosa.effects.preemphasis(librosa.util.normalize(x), coef=0.97)


def test_batch_contents_match_independent_decode(shard_dir, utts):
    by_key = {u.key: u for u in utts}
    tok = CharTokenizer.from_index(json.loads((shard_dir / "index.json").read_text()))
    seen = 0
    for b in build_loader(shard_dir, max_batch_seconds=3.0, num_workers=1, seed=0):
        assert isinstance(b, Batch)
        B, S = b.audio.shape
        assert b.audio.dtype.is_floating_point and str(b.audio.dtype) == "torch.float32"
        assert str(b.tokens.dtype) == str(b.audio_lens.dtype) == str(b.token_lens.dtype) == "torch.int64"
        assert S == int(b.audio_lens.max()) and b.tokens.shape[1] == int(b.token_lens.max())
        assert B * max(by_key[k].duration for k in b.keys) <= 3.0 or B == 1
        for i, key in enumerate(b.keys):
            u = by_key[key]
            ref = reference_audio(u)
            n = int(b.audio_lens[i])
            assert n == ref.size
            assert np.abs(b.audio[i, :n].numpy() - ref).max() <= 1e-4
            assert not b.audio[i, n:].any()  # padding exactly zero
            m = int(b.token_lens[i])
            assert b.tokens[i, :m].tolist() == tok.encode(u.text) and b.texts[i] == u.text
            assert not b.tokens[i, m:].any()
            seen += 1
    assert seen == len(utts)


def test_same_seed_epoch_same_batches_other_epoch_other_order(shard_dir):
    def run(epoch, seed=7, workers=2):
        return keys_of(build_loader(shard_dir, max_batch_seconds=4.0, num_workers=workers, seed=seed, epoch=epoch))

    first = run(0)
    assert run(0) == first
    assert run(1) != first and sorted(flat(run(1))) == sorted(flat(first))
    assert [b.index for b in build_loader(shard_dir, max_batch_seconds=4.0, num_workers=2)] == list(range(len(first)))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_batches_resumes_the_epoch(shard_dir, num_workers):
    kw = dict(max_batch_seconds=2.5, num_workers=num_workers, seed=11, epoch=3)
    full = [(b.index, b.keys) for b in build_loader(shard_dir, **kw)]
    for skip in (1, 2, 5, len(full) - 1, len(full), len(full) + 3):
        resumed = [(b.index, b.keys) for b in build_loader(shard_dir, skip_batches=skip, **kw)]
        assert resumed == full[skip:], skip


def test_infinite_mode_runs_on_and_resumes(shard_dir, utts):
    kw = dict(max_batch_seconds=4.0, num_workers=2, seed=1, infinite=True)
    stream, positions = [], []
    loader = build_loader(shard_dir, **kw)
    for b in loader:
        stream.append((b.epoch, b.index, b.keys))
        positions.append(loader.position())
        if len(stream) == 60:
            break
    assert positions[22] == {"epoch": 0, "skip_batches": 23}
    epochs = sorted({e for e, _, _ in stream})
    assert len(epochs) >= 2  # epochs follow one another, each a new order
    for e in epochs[:-1]:
        assert sorted(flat([k for ep, _, k in stream if ep == e])) == sorted(u.key for u in utts)
    for skip in (23, 41):  # inside epoch 0, and past an epoch boundary
        resumed = []
        for b in build_loader(shard_dir, **{**kw, **positions[skip - 1]}):
            resumed.append((b.epoch, b.index, b.keys))
            if len(resumed) == 60 - skip:
                break
        assert resumed == stream[skip:], skip


def test_corrupt_samples_are_skipped_counted_and_named(tmp_path, caplog):
    utts = make_utts(12, seed=4)
    bad_audio, bad_json = utts[2].key, utts[7].key
    utts[2].audio = b"\x00garbage" * 50
    write_shards(tmp_path, utts, [6, 6], json_override={bad_json: b'{"duration": '})
    loader = build_loader(tmp_path, max_batch_seconds=4.0, num_workers=0, seed=0)
    with caplog.at_level(logging.WARNING, logger="fastasr.data"):
        got = flat(keys_of(loader))
    assert sorted(got) == sorted(u.key for u in utts if u.key not in (bad_audio, bad_json))
    assert loader.stats[0]["decode"] == 1 and loader.stats[0]["bad_json"] == 1
    assert bad_audio in caplog.text and bad_json in caplog.text
    # workers report their counts to the main process too
    loader = build_loader(tmp_path, max_batch_seconds=4.0, num_workers=2, seed=0)
    assert len(flat(keys_of(loader))) == 10 and loader.stats[0]["decode"] + loader.stats[0]["bad_json"] == 2
    with pytest.raises(Exception, match="bad_json|decode"):
        list(build_loader(tmp_path, max_batch_seconds=4.0, num_workers=0, on_error="raise"))


def test_damaged_shards_are_skipped_and_counted(tmp_path):
    """A truncated shard loses its tail, a shard that is not a tar is lost: counted, the epoch goes on."""
    utts = make_utts(12, seed=6)
    write_shards(tmp_path, utts, [4, 4, 4])
    data = (tmp_path / "train/shard-000000.tar").read_bytes()
    (tmp_path / "train/shard-000000.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "train/shard-000001.tar").write_bytes(b"not a tar at all" * 100)
    loader = build_loader(tmp_path, max_batch_seconds=4.0, num_workers=1, seed=0)
    got = flat(keys_of(loader))
    assert set(u.key for u in utts[8:]) <= set(got) <= set(u.key for u in utts)
    assert loader.stats[0]["bad_shard"] + loader.stats[0]["short_shard"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_pinned_batches_move_to_the_gpu(shard_dir):
    b = next(iter(build_loader(shard_dir, max_batch_seconds=4.0, num_workers=1)))  # pin_memory defaults to CUDA
    assert b.audio.is_pinned() and b.tokens.is_pinned()
    g = b.to("cuda")
    assert g.audio.is_cuda and g.audio_lens.is_cuda and g.keys == b.keys and g.index == b.index


def test_batch_survives_pickling(shard_dir):
    """What a worker sends through the DataLoader queue comes back equal, small tensors included."""
    import pickle

    import torch

    batch = next(iter(build_loader(shard_dir, max_batch_seconds=30.0, num_workers=0, pin_memory=False)))
    back = pickle.loads(pickle.dumps(batch))
    for name in ("audio", "audio_lens", "tokens", "token_lens"):
        a, b = getattr(batch, name), getattr(back, name)
        assert isinstance(b, torch.Tensor) and b.dtype == a.dtype and torch.equal(a, b), name
    assert (back.keys, back.texts, back.epoch, back.index) == (batch.keys, batch.texts, batch.epoch, batch.index)
