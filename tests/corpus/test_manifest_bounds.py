"""Manifest lines and values beyond what a corpus can hold: a rejected row each, with a reason, never a traceback
or an allocation the size of the line (fastasr.corpus.bounds)."""

import gzip
import json

import pytest
from bounds_helpers import run_bounded
from corpus_helpers import build, make_corpus

from fastasr.corpus.bounds import MAX_LINE_BYTES
from fastasr.corpus.readers import read_source
from fastasr.shards.index import read_rejected_tsv

GOOD = [{"audio_filepath": f"set_a/{i % 3}/{i:02x}/utt{i:04d}.opus", "text": "мама мыла раму"} for i in range(3)]


def nemo(path, lines) -> None:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines))


def test_a_huge_line_is_one_malformed_row_read_in_bounded_memory(tmp_path):
    """50 MB of `[[],[],…]` parses into about a gigabyte of lists: the listing runs with its address space bounded,
    so reading the line whole (or parsing it) fails there; the lines after it are read on."""
    make_corpus(tmp_path, 3)
    huge = "[" + ",".join(["[]"] * (25 << 20)) + "]"
    manifest = tmp_path / "m.jsonl"
    nemo(manifest, [GOOD[0], huge, GOOD[1], GOOD[2]])
    with gzip.open(tmp_path / "m.jsonl.gz", "wt") as f:
        f.write(manifest.read_text())
    for name in ("m.jsonl", "m.jsonl.gz"):
        rows = run_bounded(
            "from fastasr.corpus.readers import read_source",
            f"_, rows = read_source({str(tmp_path / name)!r}); "
            "result = [(r.source, r.reject, r.detail) for r in rows]",
            margin_mb=120, timeout=120)
        assert [tuple(r) for r in rows] == [
            (GOOD[0]["audio_filepath"], None, ""),
            (f"{name}:2", "manifest_malformed", f"line longer than {MAX_LINE_BYTES} bytes"),
            (GOOD[1]["audio_filepath"], None, ""), (GOOD[2]["audio_filepath"], None, "")]


def test_csv_lines_and_fields_are_bounded(tmp_path):
    make_corpus(tmp_path, 2)
    good = [f"set_a/{i % 3}/{i:02x}/utt{i:04d}.opus,set_a/{i % 3}/{i:02x}/utt{i:04d}.txt,1.5" for i in range(2)]
    lines = [good[0], "x" * (MAX_LINE_BYTES + 10) + ",y,1", "a" * 200_000 + ",b,1", good[1]]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    _, rows = read_source(tmp_path / "m.csv")
    got = [(r.source, r.reject) for r in rows]
    assert got == [(good[0].split(",")[0], None), ("m.csv:2", "manifest_malformed"), ("m.csv:3", "manifest_malformed"),
                   (good[1].split(",")[0], None)]


def test_nemo_values_beyond_any_recording_are_rejected_rows(tmp_path):
    """A NeMo duration of 1e308 overflowed the key's milliseconds and failed the whole build."""
    make_corpus(tmp_path, 3)
    audio = GOOD[0]["audio_filepath"]
    lines = [GOOD[0], GOOD[1],
             {"audio_filepath": audio, "text": "мама", "offset": 0.0, "duration": 1e308},
             {"audio_filepath": audio, "text": "мама", "offset": 1e308},
             {"audio_filepath": audio, "text": "мама", "offset": 1e308, "duration": 1e308},
             '{"audio_filepath": "%s", "text": "мама", "offset": 1%s}' % (audio, "0" * 400),  # an int too big for a float
             '{"audio_filepath": "%s", "offset": %s}' % (audio, "1" * 5000),  # past Python's int-digits limit
             "[" * 100_000 + "]" * 100_000]  # nested past the parser's recursion limit
    nemo(tmp_path / "m.jsonl", lines)
    res = build(tmp_path / "m.jsonl", tmp_path / "out")
    got = [(s, r) for s, r, _ in read_rejected_tsv(tmp_path / "out/rejected.tsv")]
    assert res.index["totals"]["samples"] == 2
    assert sorted(got) == [("m.jsonl:3", "segment_out_of_range"), ("m.jsonl:4", "segment_out_of_range"),
                           ("m.jsonl:5", "segment_out_of_range"), ("m.jsonl:6", "manifest_malformed"),
                           ("m.jsonl:7", "manifest_malformed"), ("m.jsonl:8", "manifest_malformed")]


def test_lhotse_values_beyond_any_recording_are_rejected_rows(tmp_path):
    make_corpus(tmp_path, 2)
    recs, sups = [], []
    for i, (rate, start) in enumerate([(16000, 0.0), (16000, 1e308), (16000, float("inf")), (16000, float("nan")),
                                       (1e308, 0.0), (0, 0.0)]):
        audio = f"set_a/{i % 2 % 3}/{i % 2:02x}/utt{i % 2:04d}.opus"
        recs.append({"id": f"r{i}", "sources": [{"type": "file", "channels": [0], "source": audio}],
                     "sampling_rate": rate, "num_samples": 24000, "duration": 1.5})
        sups.append({"id": f"s{i}", "recording_id": f"r{i}", "start": start, "duration": 1.5, "text": "мама мыла"})
    (tmp_path / "x_recordings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "x_supervisions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sups))
    res = build(tmp_path / "x_supervisions.jsonl", tmp_path / "out")
    assert res.index["totals"]["samples"] == 1
    assert res.index["rejected"] == {"manifest_malformed": 4, "segment_out_of_range": 1}


@pytest.mark.parametrize("channel", [["a"], [{"x": 1}], "0"])
def test_lhotse_channel_that_is_not_a_number_is_a_rejected_row(tmp_path, channel):
    make_corpus(tmp_path, 1)
    rec = {"id": "r", "sources": [{"type": "file", "channels": [0, 1], "source": "set_a/0/00/utt0000.opus"}],
           "sampling_rate": 16000, "num_samples": 24000, "duration": 1.5}
    sup = {"id": "s", "recording_id": "r", "start": 0.2, "duration": 1.0, "text": "мама", "channel": channel}
    (tmp_path / "x_recordings.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "x_supervisions.jsonl").write_text(json.dumps(sup) + "\n")
    _, rows = read_source(tmp_path / "x_supervisions.jsonl")
    assert [r.reject for r in rows] == ["manifest_unsupported"]
