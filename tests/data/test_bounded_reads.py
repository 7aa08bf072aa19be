"""What the loader refuses to read or decode, from the claims of a tar header or an audio header, before acting on
them: sparse and oversized tar members, audio whose header disagrees with the planned duration, sample rates and
channel counts out of range, utterances over max_duration. Each is a counted skip; the rest of the shard is
delivered. The memory-bound cases run in a child process whose address space is limited (bounds_helpers)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from bounds_helpers import GIB, long_flac, member_blocks, run_bounded, sample_blocks, sparse_blocks, write_raw_tar
from data_shards import Utt, encode, make_utts, speech_like, write_shards

from fastasr.data import build_loader
from fastasr.data.sample import Sample
from fastasr.data.stages import check_header
from fastasr.shards import scan


def run(path, **kw) -> tuple[list[str], dict]:
    loader = build_loader(path, max_batch_seconds=30.0, num_workers=0, shuffle=False, **kw)
    keys = [k for b in loader for k in b.keys]
    return keys, dict(loader.stats[0])


def with_bad_sample(out, utts, bad: int, blocks, *, durations: bool, end: bool = True) -> None:
    """One shard of utts whose sample `bad` is written as `blocks(utt)` (raw tar blocks); index and durations table
    as for intact samples."""
    write_shards(out, utts, [len(utts)], durations=durations)
    tar = []
    for i, u in enumerate(utts):
        tar += blocks(u) if i == bad else sample_blocks(u.key, u.ext, u.audio, u.text, u.duration)
    write_raw_tar(out / "train" / "shard-000000.tar", tar, end=end)


CHILD = """
from fastasr.data import build_loader

def run(path):
    loader = build_loader(path, max_batch_seconds=30.0, num_workers=0, shuffle=False)
    batches = list(loader)
    return {"keys": [k for b in batches for k in b.keys], "stats": dict(loader.stats[0]),
            "longest": max(b.audio.shape[1] for b in batches)}

run(%r)  # a warm-up on intact shards: codecs, kernels and torch loaded before the limit
"""


@pytest.fixture(scope="module")
def utts():
    return make_utts(4, seed=11)


@pytest.fixture(scope="module")
def good(tmp_path_factory, utts):
    out = tmp_path_factory.mktemp("good")
    write_shards(out, utts, [4])
    return out


@pytest.mark.parametrize("durations", [True, False], ids=["planned_from_table", "planned_from_tars"])
def test_sparse_member_is_refused_unread(tmp_path, utts, good, durations):
    """2 KiB stored, 8 GiB once expanded: read, it would need 8 GiB; refused from its header, it costs nothing."""
    def sparse(u):
        return [sparse_blocks(f"{u.key}.{u.ext}", u.audio[:2048], 8 * GIB), member_blocks(f"{u.key}.txt", b"abc"),
                member_blocks(f"{u.key}.json", b'{"duration": %f}' % u.duration)]

    with_bad_sample(tmp_path, utts, 1, sparse, durations=durations)
    got = run_bounded(CHILD % str(good), f"result = run({str(tmp_path)!r})")
    assert sorted(got["keys"]) == sorted(u.key for i, u in enumerate(utts) if i != 1)
    assert got["stats"]["sparse_member"] == 1


def test_member_claiming_gigabytes_is_not_read(tmp_path, utts, good):
    """The last member's header claims 8 GiB the archive does not hold: the samples before it are delivered, the
    shard is counted as damaged, nothing allocates what the header says."""
    def huge(u):
        return [member_blocks(f"{u.key}.txt", b"abc"), member_blocks(f"{u.key}.{u.ext}", b"", claimed=8 * GIB)]

    with_bad_sample(tmp_path, utts, 3, huge, durations=True, end=False)
    got = run_bounded(CHILD % str(good), f"result = run({str(tmp_path)!r})")
    assert sorted(got["keys"]) == sorted(u.key for u in utts[:3])
    assert got["stats"]["bad_shard"] == 1


@pytest.mark.parametrize("limit,ext", [("MAX_TEXT_MEMBER_BYTES", "json"), ("MAX_AUDIO_MEMBER_BYTES", "audio")])
def test_members_over_their_limit_are_counted_skips(tmp_path, utts, monkeypatch, limit, ext):
    """Limits lowered so that exactly one member of the shard is over: that sample alone is skipped."""
    if ext == "json":
        padded = {u.key: b'{"duration": %f, "pad": "%s"}' % (u.duration, b"x" * (300 if i == 2 else 10))
                  for i, u in enumerate(utts)}
        write_shards(tmp_path, utts, [4], json_override=padded)
        monkeypatch.setattr(scan, limit, 200)
        over = {utts[2].key}
    else:
        write_shards(tmp_path, utts, [4])
        size = sorted(len(u.audio) for u in utts)[-1]
        monkeypatch.setattr(scan, limit, size - 1)
        over = {u.key for u in utts if len(u.audio) == size}
    keys, stats = run(tmp_path)
    assert set(keys) == {u.key for u in utts} - over
    assert stats["member_too_large"] == len(over)


def test_hour_of_audio_listed_as_seconds_is_never_decoded(tmp_path, utts, good):
    """The issue's sample: KEY.json and the durations table say 1.5 s, the FLAC holds an hour (57.6 M samples at
    16 kHz): decoded, 230 MB; skipped from its header as duration_mismatch, no batch is longer than the rest."""
    hour = long_flac(3600.0)
    assert sf.info(io.BytesIO(hour)).frames == 3600 * 16000
    liar = Utt("set_9/00/liar", "flac", hour, "мама", 1.5, 16000, 1)
    write_shards(tmp_path, [*utts, liar], [5])
    got = run_bounded(CHILD % str(good), f"result = run({str(tmp_path)!r})")
    assert sorted(got["keys"]) == sorted(u.key for u in utts)
    assert got["stats"]["duration_mismatch"] == 1
    assert got["longest"] <= 16000 * max(u.duration for u in utts) + 1


@pytest.mark.parametrize("sr,channels,reason", [(500, 1, "bad_sample_rate"), (384000, 1, "bad_sample_rate"),
                                                (16000, 20, "too_many_channels")])
def test_implausible_headers_are_refused_before_decoding(tmp_path, utts, sr, channels, reason):
    x = speech_like(0.5, sr, channels, 7)
    odd = Utt("set_9/00/odd", "wav", encode(x, sr, "wav"), "мама", len(x) / sr, sr, channels)
    write_shards(tmp_path, [*utts, odd], [5])
    keys, stats = run(tmp_path)
    assert sorted(keys) == sorted(u.key for u in utts) and stats[reason] == 1


@pytest.mark.parametrize("durations", [True, False], ids=["planned_from_table", "planned_from_tars"])
def test_max_duration_skips_long_utterances_when_planning(tmp_path, durations):
    many = make_utts(12, seed=5, min_s=0.3, max_s=1.6)
    write_shards(tmp_path, many, [7, 5], durations=durations)
    keys, stats = run(tmp_path, max_duration=1.0)
    assert sorted(keys) == sorted(u.key for u in many if u.duration <= 1.0)
    assert stats["too_long"] == sum(u.duration > 1.0 for u in many) > 0


def test_max_duration_is_checked_again_on_the_audio_header(tmp_path, utts):
    """Planned at 0.95 s (within the tolerance of its 1.04 s header): under max_duration=1.0 by the plan, over it
    by the audio itself, which is what would be batched."""
    x = speech_like(1.04, 16000, 1, 3)
    near = Utt("set_9/00/near", "wav", encode(x, 16000, "wav"), "мама", 0.95, 16000, 1)
    short = [u for u in utts if u.duration <= 1.0]
    write_shards(tmp_path, [*short, near], [len(short) + 1])
    keys, stats = run(tmp_path, max_duration=1.0)
    assert sorted(keys) == sorted(u.key for u in short) and stats["too_long"] == 1


def test_speed_perturbed_samples_pass_the_header_check(good, utts):
    """The plan holds duration / factor; the header check compares the stored duration."""
    loader = build_loader(good, max_batch_seconds=30.0, num_workers=0, speed_perturb=(0.8, 1.25), seed=3)
    assert sorted(k for b in loader for k in b.keys) == sorted(u.key for u in utts)
    assert not {k for k in loader.stats[0] if k not in ("batches", "samples")}


@pytest.mark.parametrize("planned,header,ok", [(10.0, 10.19, True), (10.0, 10.21, False), (10.0, 9.81, True),
                                               (10.0, 9.79, False), (1.0, 1.09, True), (1.0, 1.11, False),
                                               (1.5, 3600.0, False)])
def test_duration_tolerance_is_the_larger_of_a_tenth_and_two_percent(planned, header, ok):
    sample = Sample("k", planned, "", np.zeros(1, np.int64), b"")
    frames = round(header * 16000)
    if ok:
        check_header(frames, 16000, 1, sample, None)
    else:
        with pytest.raises(ValueError, match="duration_mismatch"):
            check_header(frames, 16000, 1, sample, None)
