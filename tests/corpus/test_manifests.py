"""Lhotse and Kaldi readers: the same corpus described by a NeMo manifest, a Lhotse CutSet, a Lhotse
RecordingSet + SupervisionSet and a Kaldi data dir gives byte-identical shards and the same rejected.tsv.
The Lhotse records are written by hand in the JSON that `lhotse` itself writes (`CutSet.to_file`)."""

import gzip
import io
import json

import numpy as np
import pytest
import soundfile as sf
from corpus_helpers import build, shard_bytes, write_utt

from fastasr.corpus.readers import read_source
from fastasr.errors import UserError

# (recording, start, duration, text, speaker): b's last span ends past the file (rejected in every format alike)
SPANS = [
    ("a", 0.0, 1.5, "Мама мыла раму.", "spk1"),
    ("a", 1.5, 2.0, "солнце светит ярко", "spk2"),
    ("a", 4.0, 1.5, "тихо шумит лес", "spk1"),
    ("b", 0.5, 2.0, "над полем", "spk2"),
    ("b", 2.5, 1.5, "за краем", "spk3"),
]
FILES = {"a": ("talks/a.wav", 6.0), "b": ("talks/b.flac", 3.0)}
WHOLE = ("c", "other/c.opus", 2.0, "утром", "spk3")  # a whole file: Lhotse and NeMo only


@pytest.fixture()
def corpus(tmp_path):
    for i, (rel, seconds) in enumerate(FILES.values()):
        write_utt(tmp_path, rel, None, seconds=seconds, seed=i)
    write_utt(tmp_path, WHOLE[1], None, seconds=WHOLE[2], seed=9)
    return tmp_path


def nemo_rows(with_whole: bool) -> list[dict]:
    rows = [{"audio_filepath": FILES[r][0], "offset": s, "duration": d, "text": t, "speaker": spk}
            for r, s, d, t, spk in SPANS]
    if with_whole:
        rows.append({"audio_filepath": WHOLE[1], "duration": WHOLE[2], "text": WHOLE[3], "speaker": WHOLE[4]})
    return rows


def recording(rid: str, path: str, seconds: float, sr: int = 16000, channels=(0,)) -> dict:
    return {"id": rid, "sources": [{"type": "file", "channels": list(channels), "source": path}],
            "sampling_rate": sr, "num_samples": int(seconds * sr), "duration": seconds, "channel_ids": list(channels)}


def supervision(sid, rid, start, duration, text, speaker, channel=0) -> dict:
    return {"id": sid, "recording_id": rid, "start": start, "duration": duration, "channel": channel,
            "text": text, "language": "Russian", "speaker": speaker}


def all_recordings():
    return {**{r: recording(r, p, s) for r, (p, s) in FILES.items()}, WHOLE[0]: recording(*WHOLE[:3])}


def all_supervisions():
    sups = [supervision(f"{r}-{i}", r, s, d, t, spk) for i, (r, s, d, t, spk) in enumerate(SPANS)]
    return sups + [supervision("c-0", WHOLE[0], 0.0, WHOLE[2], WHOLE[3], WHOLE[4])]


def write_jsonl(path, records, gz=False):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def lhotse_cuts():
    """One MonoCut per recording; a's cut starts at 1.0 s into the recording, so its supervisions (relative to the
    cut, as Lhotse keeps them) start 1.0 s earlier — one of them before the cut, as Lhotse allows."""
    recs, cuts = all_recordings(), []
    for rid, rec in recs.items():
        cut_start = 1.0 if rid == "a" else 0.0
        sups = [dict(s, start=round(s["start"] - cut_start, 6)) for s in all_supervisions() if s["recording_id"] == rid]
        cuts.append({"id": f"cut-{rid}", "start": cut_start, "duration": rec["duration"] - cut_start, "channel": 0,
                     "supervisions": sups, "recording": rec, "type": "MonoCut"})
    return cuts


def kaldi_dir(root):
    d = root / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("".join(f"{r} {p}\n" for r, (p, _) in FILES.items()))
    utts = [(f"{spk}-{r}-{i}", r, s, d_, t, spk) for i, (r, s, d_, t, spk) in enumerate(SPANS)]
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, _, _, t, _ in utts), encoding="utf-8")
    (d / "segments").write_text("".join(f"{u} {r} {s:.2f} {s + d_:.2f}\n" for u, r, s, d_, _, _ in utts))
    (d / "utt2spk").write_text("".join(f"{u} {spk}\n" for u, _, _, _, _, spk in utts))
    return d


def test_lhotse_and_kaldi_give_the_shards_of_the_equivalent_nemo_manifest(corpus):
    def same(a, b):
        assert shard_bytes(a) and shard_bytes(a) == shard_bytes(b)
        assert (a / "rejected.tsv").read_text() == (b / "rejected.tsv").read_text()

    write_jsonl(corpus / "nemo.jsonl", nemo_rows(True))
    nemo = build(corpus / "nemo.jsonl", corpus / "o_nemo", shard_size=2)
    assert nemo.index["totals"] == {"input_rows": 6, "samples": 5, "seconds": 9.0, "rejected": 1}
    assert nemo.index["rejected"] == {"segment_out_of_range": 1}

    write_jsonl(corpus / "cuts.jsonl.gz", lhotse_cuts(), gz=True)
    build(corpus / "cuts.jsonl.gz", corpus / "o_cuts", shard_size=2)
    same(corpus / "o_nemo", corpus / "o_cuts")

    write_jsonl(corpus / "ru_recordings_dev.jsonl.gz", all_recordings().values(), gz=True)
    write_jsonl(corpus / "ru_supervisions_dev.jsonl.gz", all_supervisions(), gz=True)
    build(corpus / "ru_supervisions_dev.jsonl.gz", corpus / "o_sups", shard_size=2)
    same(corpus / "o_nemo", corpus / "o_sups")
    build(corpus / "ru_recordings_dev.jsonl.gz", corpus / "o_recs", shard_size=2)  # either file names the pair
    same(corpus / "o_nemo", corpus / "o_recs")

    # Kaldi has no whole-file rows beside segments: compare with the NeMo manifest of the segments alone
    write_jsonl(corpus / "nemo_segments.jsonl", nemo_rows(False))
    build(corpus / "nemo_segments.jsonl", corpus / "o_nemo2", shard_size=2)
    build(corpus, corpus / "o_kaldi", shard_size=2, manifest=kaldi_dir(corpus))  # paths relative to SOURCE
    same(corpus / "o_nemo2", corpus / "o_kaldi")
    # grouped by speaker, Kaldi's utt2spk and Lhotse's speaker say the same
    build(corpus, corpus / "g_kaldi", shard_size=2, manifest=corpus / "data/train", group_by="speaker")
    build(corpus / "nemo_segments.jsonl", corpus / "g_nemo", shard_size=2, group_by="speaker")
    same(corpus / "g_nemo", corpus / "g_kaldi")


def test_lhotse_channels_and_what_is_not_read(tmp_path):
    stereo = np.stack([np.linspace(-0.5, 0.5, 32000), np.linspace(0.5, -0.5, 32000)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 16000, subtype="PCM_16")
    rec = recording("st", "st.wav", 2.0, channels=(0, 1))
    cuts = [
        {"id": "c1", "start": 0, "duration": 2.0, "channel": 1, "type": "MonoCut", "recording": rec,
         "supervisions": [supervision("s1", "st", 0.5, 1.0, "правый канал", "x", channel=1),
                          supervision("s2", "st", 0.0, 2.0, "оба канала", "x", channel=[0, 1]),
                          supervision("s3", "st", 0.5, 1.0, None, "x", channel=0)]},
        {"id": "c2", "start": 0, "duration": 2.0, "channel": 0, "type": "MonoCut", "recording": rec,
         "supervisions": []},
        {"id": "m", "type": "MixedCut", "tracks": []},
        {"id": "c3", "start": 0, "duration": 1.0, "channel": 0, "type": "MonoCut",
         "recording": dict(recording("u", "http://x/a.wav", 1.0), sources=[{"type": "url", "channels": [0],
                                                                            "source": "http://x/a.wav"}]),
         "supervisions": [supervision("s4", "u", 0.0, 1.0, "где-то", "x")]},
    ]
    rows = list(read_source(write_jsonl(tmp_path / "cuts.jsonl", cuts))[1])
    right, both, notext, empty, mixed, url = rows
    assert (right.channel, right.offset, right.length, right.reject) == (1, 0.5, 1.0, None)
    assert right.key == "st_00000500-00001500-c1"
    assert both.offset is None and both.key == "st"  # all channels, the whole recording: the file itself
    assert notext.reject == "transcript_missing" and notext.channel == 0
    assert (empty.reject, empty.source) == ("transcript_missing", "cuts.jsonl:2")
    assert mixed.reject == url.reject == "manifest_unsupported"
    res = build(tmp_path / "cuts.jsonl", tmp_path / "out", split_fractions={"train": 0, "val": 0, "test": 1})
    assert res.index["totals"]["samples"] == 2
    import tarfile

    with tarfile.open(tmp_path / "out/test/shard-000000.tar") as tar:
        data = tar.extractfile("st_00000500-00001500-c1.flac").read()
    got = sf.read(io.BytesIO(data), dtype="float32")[0]
    np.testing.assert_array_equal(got, sf.read(tmp_path / "st.wav", dtype="float32")[0][8000:24000, 1])


def test_lhotse_supervisions_need_their_recordings(tmp_path):
    write_jsonl(tmp_path / "sups.jsonl", [supervision("s", "r", 0, 1, "да", "x")])
    with pytest.raises(UserError, match="has no 'supervisions'"):
        read_source(tmp_path / "sups.jsonl")
    write_jsonl(tmp_path / "x_supervisions.jsonl", [supervision("s", "r", 0, 1, "да", "x")])
    with pytest.raises(UserError, match="x_recordings.jsonl, which does not exist"):
        read_source(tmp_path / "x_supervisions.jsonl")
    write_jsonl(tmp_path / "x_recordings.jsonl", [recording("other", "o.wav", 1.0)])
    (row,) = read_source(tmp_path / "x_supervisions.jsonl")[1]
    assert (row.reject, row.source) == ("audio_missing", "x_supervisions.jsonl:1")


def test_kaldi_dir_accounting(tmp_path):
    d = tmp_path / "k"
    d.mkdir()
    (d / "wav.scp").write_text("r1 a.wav\nr2 sox b.wav -t wav - |\nr3 c.wav\n")
    (d / "text").write_text("u1 один\nu2 два\nu4 четыре\nu5 пять\nu6\n", encoding="utf-8")
    (d / "segments").write_text("u1 r1 0.5 -1\nu2 r2 0 1\nu3 r3 0 1\nu5 r9 0 1\nu6 r1 0 0.4\nbroken line\n")
    rows = {r.label: r for r in read_source(d)[1]}
    assert rows["a.wav@0.500-end"].length is None and rows["a.wav@0.500-end"].reject is None
    assert rows["a.wav@0.000-0.400"].text == ""  # u6: an empty transcript, rejected later as transcript_empty
    assert {label: r.reject for label, r in rows.items() if r.reject} == {
        "wav.scp:r2 (u2)": "manifest_unsupported",
        "c.wav@0.000-1.000": "transcript_missing",  # u3
        "text:u4": "audio_missing",  # not in segments
        "text:u5": "audio_missing",  # its recording is not in wav.scp
        "segments:6": "manifest_malformed",
    }
    # a directory holding wav.scp is read as a Kaldi dir, and it needs its text
    (d / "text").unlink()
    with pytest.raises(UserError, match="without text"):
        read_source(d)


def test_a_line_that_is_not_utf8_is_a_rejected_row_and_a_broken_gzip_a_user_error(tmp_path):
    good = json.dumps({"audio_filepath": "a.wav", "text": "да"}).encode()
    bad = '{"audio_filepath": "b.wav", "text": "нет"}'.encode("cp1251")
    (tmp_path / "m.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    rows = list(read_source(tmp_path / "m.jsonl")[1])
    assert rows[0].reject is None and (rows[1].reject, rows[1].detail) == ("manifest_malformed", "not UTF-8")
    (tmp_path / "cuts.jsonl.gz").write_bytes(b"\x1f\x8b" + b"not a gzip stream")
    with pytest.raises(UserError, match="cuts.jsonl.gz cannot be read"):
        read_source(tmp_path / "cuts.jsonl.gz")
