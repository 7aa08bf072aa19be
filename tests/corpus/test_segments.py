"""Segments (NeMo offset/duration): each span is a sample of its own whose stored audio decodes to exactly the
original file's samples over that span — checked against soundfile's decode of the whole original, sliced."""

import io
import json

import numpy as np
import soundfile as sf
from corpus_helpers import build, read_dataset, write_utt

from fastasr.shards.index import read_rejected_tsv

TEST_ONLY = {"train": 0.0, "val": 0.0, "test": 1.0}


def nemo(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def members_of(out):
    return {n: b for shard in read_dataset(out).values() for n, b in shard.items()}


def span_key(stem, start, end):
    return f"{stem}_{round(start * 1000):08d}-{round(end * 1000):08d}"


def test_three_segments_of_one_recording_are_three_samples(tmp_path):
    rec = write_utt(tmp_path, "talks/lecture.wav", None, seconds=6.0, seed=3)
    spans = [(0.0, 1.5, "Мама мыла раму."), (1.5, 2.0, "солнце светит ярко"), (3.75, 2.25, "тихо шумит лес")]
    m = nemo(tmp_path / "m.jsonl", [{"audio_filepath": "talks/lecture.wav", "offset": s, "duration": d, "text": t}
                                     for s, d, t in spans])
    res = build(m, tmp_path / "out", split_fractions=TEST_ONLY)
    assert res.index["totals"] == {"input_rows": 3, "samples": 3, "seconds": 5.75, "rejected": 0}
    members = members_of(tmp_path / "out")
    full, sr = sf.read(rec, dtype="float32")
    assert {n.rsplit(".", 1)[0] for n in members} == {span_key("talks/lecture", s, s + d) for s, d, _ in spans}
    for (start, dur, text), expected_text in zip(spans, ["мама мыла раму", "солнце светит ярко", "тихо шумит лес"]):
        key = span_key("talks/lecture", start, start + dur)
        audio, rate = sf.read(io.BytesIO(members[key + ".flac"]), dtype="float32")
        assert rate == sr
        np.testing.assert_array_equal(audio, full[round(start * sr): round((start + dur) * sr)])
        assert members[key + ".txt"].decode() == expected_text
        info = json.loads(members[key + ".json"])
        assert info == {"duration": dur, "sample_rate": sr, "channels": 1, "source": "talks/lecture.wav",
                        "raw_text": text, "offset": start}
    # re-stored spans are reproducible: another build gives the same bytes, a rerun skips every shard
    build(m, tmp_path / "again", split_fractions=TEST_ONLY, workers=2, shard_size=1)
    assert members_of(tmp_path / "again") == members
    assert build(m, tmp_path / "out", split_fractions=TEST_ONLY).written == 0


def test_lossy_24_bit_and_whole_spans_are_stored_without_loss(tmp_path):
    opus = write_utt(tmp_path, "r/a.opus", None, seconds=4.0, seed=1)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * 8000, 1))
    sf.write(tmp_path / "r/b24.wav", x, 8000, subtype="PCM_24")
    flac = write_utt(tmp_path, "r/c.flac", None, seconds=2.0, seed=2)
    other = write_utt(tmp_path, "r/d.flac", None, seconds=2.0, seed=4)
    m = nemo(tmp_path / "m.jsonl", [
        {"audio_filepath": "r/a.opus", "offset": 0.5, "duration": 2.0, "text": "раз"},
        {"audio_filepath": "r/b24.wav", "offset": 1.25, "duration": 1.5, "text": "два"},
        {"audio_filepath": "r/c.flac", "offset": 0, "duration": 2.0, "text": "три"},  # the whole file
        {"audio_filepath": "r/d.flac", "offset": 0.5, "text": "четыре"},  # no duration: to the end
    ])
    res = build(m, tmp_path / "out", split_fractions=TEST_ONLY, filters=_loose())
    assert res.index["totals"]["samples"] == 4, read_rejected_tsv(tmp_path / "out/rejected.tsv")
    members = members_of(tmp_path / "out")

    def stored(name):
        return sf.read(io.BytesIO(members[name]), dtype="float32")[0]

    # Opus: a float WAV of the float32 decode (an integer format could not hold it)
    full = sf.read(opus, dtype="float32")[0]
    np.testing.assert_array_equal(stored(span_key("r/a", 0.5, 2.5) + ".wav"), full[8000:40000])
    # 24-bit PCM: 24-bit FLAC, the same samples
    full = sf.read(tmp_path / "r/b24.wav", dtype="float32")[0]
    got = stored(span_key("r/b24", 1.25, 2.75) + ".flac")
    np.testing.assert_array_equal(got, full[10000:22000])
    assert sf.info(io.BytesIO(members[span_key("r/b24", 1.25, 2.75) + ".flac"])).subtype == "PCM_24"
    # a span that is the whole file keeps the file's own bytes
    assert members[span_key("r/c", 0, 2.0) + ".flac"] == flac.read_bytes()
    tail = stored("r/d_00000500-end.flac")
    np.testing.assert_array_equal(tail, sf.read(other, dtype="float32")[0][8000:])
    assert json.loads(members["r/d_00000500-end.json"])["duration"] == 1.5


def _loose():
    from fastasr.corpus.checks import Filters

    return Filters(min_cps=0.1)


def test_spans_that_cannot_be_samples_are_rejected_with_a_reason(tmp_path):
    write_utt(tmp_path, "r/a.wav", None, seconds=4.0)
    rows = [
        {"offset": 0.0, "duration": 1.0, "text": "первый"},  # kept
        {"offset": 1.5, "duration": 1.0, "text": "второй"},  # overlaps the next by 0.5 s: both rejected
        {"offset": 2.0, "duration": 1.0, "text": "третий"},
        {"offset": 1.0, "duration": 0.505, "text": "впритык"},  # touches the first, within 10 ms of the second
        {"offset": 3.5, "duration": 0.5, "text": "до конца"},  # kept: ends exactly at the end
        {"offset": 4.2, "duration": 1.0, "text": "после конца"},
        {"offset": 3.0, "duration": 0.5, "text": "внутри"},  # touches its neighbours: kept
        {"offset": -0.5, "duration": 1.0, "text": "раньше начала"},
        {"offset": 0.5, "duration": 0, "text": "пусто"},
        {"offset": "x", "duration": 1.0, "text": "не число"},
    ]
    write_utt(tmp_path, "r/b.wav", None, seconds=2.0)
    write_utt(tmp_path, "r/c.wav", None, seconds=2.0)
    rows = [{"audio_filepath": "r/a.wav", **r} for r in rows]
    rows.append({"audio_filepath": "r/b.wav", "offset": 1.0, "duration": 1.005, "text": "чуть за"})  # within 10 ms
    rows.append({"audio_filepath": "r/c.wav", "offset": 1.0, "duration": 1.5, "text": "за край"})  # > 10 ms past
    m = nemo(tmp_path / "m.jsonl", rows)
    res = build(m, tmp_path / "out", split_fractions=TEST_ONLY, filters=_loose())
    got = {s: r for s, r, _ in read_rejected_tsv(tmp_path / "out/rejected.tsv")}
    assert got == {
        "r/a.wav@1.500-2.500": "segment_overlap",
        "r/a.wav@2.000-3.000": "segment_overlap",
        "r/a.wav@4.200-5.200": "segment_out_of_range",
        "r/a.wav@-0.500-0.500": "segment_out_of_range",
        "r/a.wav@0.500-0.500": "segment_empty",
        "m.jsonl:10": "manifest_malformed",
        "r/c.wav@1.000-2.500": "segment_out_of_range",
    }
    assert res.index["totals"]["samples"] == 5 and res.index["totals"]["input_rows"] == 12
    members = members_of(tmp_path / "out")
    assert json.loads(members[span_key("r/b", 1.0, 2.005) + ".json"])["duration"] == 1.0  # cut at the file's end


def test_the_loader_reads_segment_samples_as_their_spans(tmp_path):
    from fastasr.data import build_loader

    write_utt(tmp_path, "r/a.wav", None, seconds=5.0, sr=8000)
    spans = [(0.25, 1.0), (1.5, 2.0), (4.0, 1.0)]
    m = nemo(tmp_path / "m.jsonl", [{"audio_filepath": "r/a.wav", "offset": s, "duration": d, "text": "мама мыла"}
                                     for s, d in spans])
    build(m, tmp_path / "out", split_fractions=TEST_ONLY)
    batches = list(build_loader(tmp_path / "out", "test", max_batch_seconds=100, num_workers=0, shuffle=False))
    lens = {k: int(n) for b in batches for k, n in zip(b.keys, b.audio_lens)}
    assert lens == {span_key("r/a", s, s + d): round(d * 16000) for s, d in spans}  # resampled to 16 kHz
