import json
import os
import tarfile
from pathlib import Path

from corpus_helpers import audio_bytes, build, make_corpus, read_dataset, shard_bytes, write_utt

from fastasr.cli import main
from fastasr.corpus.checks import Filters, Reject, check_row
from fastasr.corpus.rows import Row
from fastasr.corpus.split import assign_split, parse_fractions
from fastasr.shards.index import read_rejected_tsv
from fastasr.text.normalization import TextConfig


def test_every_reject_reason(tmp_path):
    src = tmp_path / "c"
    make_corpus(src, 3)
    good = audio_bytes(1.5)
    write_utt(src, "bad/truncated.opus", "обрезанный файл", audio=good[: len(good) // 2])
    write_utt(src, "bad/garbage.opus", "мусор", audio=b"\x00garbage" * 50)
    write_utt(src, "bad/empty.opus", "пустой", audio=b"")
    (src / "bad/noaudio.txt").write_text("нет звука")
    write_utt(src, "bad/notext.opus", None)
    write_utt(src, "bad/blank.opus", "  \n")
    write_utt(src, "bad/cp1251.opus", "привет".encode("cp1251"))
    write_utt(src, "bad/punct.opus", "?!…")
    write_utt(src, "bad/digits.opus", "в 1999 году")
    write_utt(src, "bad/latin.opus", "привет world")
    write_utt(src, "bad/greek.opus", "привет ωμέγα")
    write_utt(src, "bad/short.opus", "да", seconds=0.1)
    write_utt(src, "bad/long.opus", "очень длинная запись", seconds=8.0)
    write_utt(src, "bad/fast.opus", " ".join(["слово"] * 12), seconds=1.0)  # the seed's "10+ words in 1 s"
    write_utt(src, "bad/slow.opus", "да", seconds=4.0)
    write_utt(src, "bad/dup.opus", "первая копия")
    write_utt(src, "bad/dup.wav", "вторая копия")
    write_utt(src, "ok/stereo48k.flac", "стерео запись", sr=48000, channels=2, seconds=1.2)
    write_utt(src, "ok/yo.wav", "Ёлка-палка!")

    res = build(src, tmp_path / "out", filters=Filters(max_duration=6.0))
    got = {s: r for s, r, _ in read_rejected_tsv(tmp_path / "out/rejected.tsv")}
    assert got == {
        "bad/truncated.opus": "audio_undecodable",
        "bad/garbage.opus": "audio_undecodable",
        "bad/empty.opus": "audio_empty",
        "bad/noaudio.txt": "audio_missing",
        "bad/notext.opus": "transcript_missing",
        "bad/blank.opus": "transcript_empty",
        "bad/cp1251.opus": "transcript_not_utf8",
        "bad/punct.opus": "empty_text",
        "bad/digits.opus": "digits",
        "bad/latin.opus": "latin",
        "bad/greek.opus": "out_of_alphabet",
        "bad/short.opus": "duration_too_short",
        "bad/long.opus": "duration_too_long",
        "bad/fast.opus": "speaking_rate",
        "bad/slow.opus": "speaking_rate",
        "bad/dup.wav": "duplicate_key",
    }
    index = res.index
    t = index["totals"]
    assert t["input_rows"] == 3 + 17 + 2 and t["rejected"] == 16 and t["samples"] == 6
    assert sum(index["rejected"].values()) == 16 and index["rejected"]["speaking_rate"] == 2
    assert index["seed_rule"]["speaking_rate_rejects_it_would_catch"] == 1  # fast.opus, not slow.opus
    # per split: every reject but the duplicate (rejected before its split was known)
    assert sum(sum(v["rejected"].values()) for v in index["splits"].values()) == 15
    infos = {json.loads(b)["source"]: json.loads(b) for shard in read_dataset(tmp_path / "out").values()
             for n, b in shard.items() if n.endswith(".json")}
    assert set(infos) == {"set_a/0/00/utt0000.opus", "set_a/1/01/utt0001.opus", "set_a/2/02/utt0002.opus",
                          "bad/dup.opus", "ok/stereo48k.flac", "ok/yo.wav"}
    assert infos["ok/stereo48k.flac"] == {"duration": 1.2, "sample_rate": 48000, "channels": 2,
                                          "source": "ok/stereo48k.flac", "raw_text": "стерео запись"}


def test_unreadable_files_are_told_from_missing_ones(tmp_path):
    audio = tmp_path / "a.opus"
    audio.write_bytes(audio_bytes(1.0))
    (tmp_path / "dir.opus").mkdir()
    (tmp_path / "dir.txt").mkdir()

    def reason(**row):
        got = check_row(Row("a.opus", **row), TextConfig(), Filters())
        assert isinstance(got, Reject)
        return got.reason

    assert reason(audio=str(audio), text_path=str(tmp_path / "dir.txt")) == "transcript_unreadable"
    assert reason(audio=str(audio), text_path=str(tmp_path / "gone.txt")) == "transcript_missing"
    assert reason(audio=str(tmp_path / "dir.opus"), text_path=None) == "audio_unreadable"
    assert reason(audio=str(tmp_path / "gone.opus"), text_path=None) == "audio_missing"


def test_tar_and_webdataset_readback(tmp_path):
    import webdataset as wds

    src = tmp_path / "c"
    sources = make_corpus(src, 6)
    write_utt(src, "x/name.with.dots.opus", "Ёж, кто-то!")
    sources.append("x/name.with.dots.opus")
    res = build(src, tmp_path / "out", split_fractions=parse_fractions("0,0,1"), shard_size=4)
    index = res.index
    assert index["splits"]["test"]["samples"] == 7 and index["splits"]["train"]["shards"] == []
    assert [s["path"] for s in index["splits"]["test"]["shards"]] == ["test/shard-000000.tar", "test/shard-000001.tar"]

    members = {n: b for shard in read_dataset(tmp_path / "out").values() for n, b in shard.items()}
    for source in sources:
        key = source[: -len(".opus")].replace("name.with.dots", "name%2Ewith%2Edots")
        assert members[key + ".opus"] == (src / source).read_bytes()
        assert json.loads(members[key + ".json"])["source"] == source
    assert members["x/name%2Ewith%2Edots.txt"].decode() == "еж ктото"

    urls = [str(tmp_path / "out" / s["path"]) for s in index["splits"]["test"]["shards"]]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert set(sample) >= {"__key__", "opus", "txt", "json"}
        seen[sample["__key__"]] = sample
    assert len(seen) == 7
    s = seen["x/name%2Ewith%2Edots"]
    assert s["opus"] == (src / "x/name.with.dots.opus").read_bytes() and s["txt"] == "еж ктото".encode()


def test_split_is_a_stable_salted_hash(tmp_path):
    fr = parse_fractions("0.6,0.2,0.2")
    keys = [f"k/{i}" for i in range(3000)]
    counts = {s: sum(assign_split(k, 17, fr) == s for k in keys) for s in fr}
    assert 1650 < counts["train"] < 1950 and 450 < counts["val"] < 750
    assert [assign_split(k, 17, fr) for k in keys[:50]] != [assign_split(k, 18, fr) for k in keys[:50]]
    assert all(assign_split(k, 17, parse_fractions("0,0,1")) == "test" for k in keys)
    # on disk: adding utterances never moves an old one
    src = tmp_path / "c"
    make_corpus(src, 20)

    def key_splits(out):
        return {n.rsplit(".", 1)[0]: path.split("/")[0] for path, m in read_dataset(out).items() for n in m}

    build(src, tmp_path / "o1", shard_size=4)
    before = key_splits(tmp_path / "o1")
    make_corpus(src, 20, start=20)
    build(src, tmp_path / "o2", shard_size=4)
    after = key_splits(tmp_path / "o2")
    assert len(before) == 20 and len(after) == 40
    assert all(after[k] == v for k, v in before.items())


def test_parallel_build_is_reproducible_and_rerun_skips(tmp_path):
    src = tmp_path / "c"
    make_corpus(src, 24)
    a = build(src, tmp_path / "a", shard_size=3, workers=1)
    b = build(src, tmp_path / "b", shard_size=3, workers=2)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert (tmp_path / "a/rejected.tsv").read_bytes() == (tmp_path / "b/rejected.tsv").read_bytes()
    assert a.index["splits"] == b.index["splits"]
    again = build(src, tmp_path / "b", shard_size=3, workers=2)
    assert again.written == 0 and again.skipped == b.written and again.index == b.index
    # fewer rows next time: the shards of the old plan do not linger
    for p in sorted(src.rglob("utt001*.opus")):
        p.unlink()
    smaller = build(src, tmp_path / "b", shard_size=3)
    on_disk = {str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").glob("*/shard-*.tar")}
    assert on_disk == {s["path"] for v in smaller.index["splits"].values() for s in v["shards"]}


def test_parts_combine_to_the_single_machine_build(tmp_path):
    src = tmp_path / "c"
    make_corpus(src, 18)
    write_utt(src, "bad/x.opus", "в 2024")
    write_utt(src, "bad/x.wav", "дубликат")  # a pre-planning reject, owned by part 1
    single = build(src, tmp_path / "single", shard_size=2)
    parts = tmp_path / "parts"
    r3 = build(src, parts, shard_size=2, part=(3, 3))
    assert r3.index_path is None and not (parts / "index.json").exists()
    build(src, parts, shard_size=2, part=(1, 3))
    last = build(src, parts, shard_size=2, part=(2, 3))
    assert last.index_path == parts / "index.json"
    merged = json.loads((parts / "index.json").read_text())
    assert shard_bytes(parts) == shard_bytes(tmp_path / "single")
    for field in ("splits", "totals", "rejected", "seed_rule", "text", "settings"):
        assert merged[field] == single.index[field], field
    assert (parts / "rejected.tsv").read_text() == (tmp_path / "single/rejected.tsv").read_text()
    for split in merged["splits"]:
        name = f"durations-{split}.json"
        assert (parts / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
        assert_durations_match_the_json_members(parts, split)
    # by hand, too
    (parts / "index.json").unlink()
    assert main(["shard", "--merge", str(parts)]) == 0
    assert json.loads((parts / "index.json").read_text()) == merged


def assert_durations_match_the_json_members(out: Path, split: str) -> None:
    """durations-SPLIT.json holds, per shard in tar order, the duration each KEY.json member holds."""
    index = json.loads((out / "index.json").read_text())
    table = json.loads((out / index["splits"][split]["durations"]).read_text())
    assert table["format"] == "fastasr-durations/1" and table["split"] == split
    assert sorted(table["shards"]) == sorted(s["path"] for s in index["splits"][split]["shards"])
    for path, values in table["shards"].items():
        with tarfile.open(out / path) as tar:
            found = [json.loads(tar.extractfile(m).read())["duration"] for m in tar if m.name.endswith(".json")]
        assert values == found, path


def test_cli_exit_codes(tmp_path, capsys):
    src = tmp_path / "c"
    make_corpus(src, 4)
    write_utt(src, "bad/x.opus", "")
    out = tmp_path / "out"
    assert main(["shard", str(src), str(out), "--workers", "1"]) == 0  # rejects are not a failure
    summary = capsys.readouterr().out
    assert "input rows 5 = 4 in shards + 1 rejected" in summary and "transcript_empty" in summary
    # bad arguments, a SOURCE that is not there or holds nothing included: 2
    assert main(["shard", str(tmp_path / "missing"), str(out), "--quiet"]) == 2
    assert main(["shard", str(src), str(out), "--split", "1,2", "--quiet"]) == 2
    assert main(["shard", str(src), str(out), "--part", "0/2", "--quiet"]) == 2
    assert main(["shard", str(src)]) == 2
    assert main(["shard", "--merge", str(tmp_path / "nothing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["shard", str(empty), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no input rows" in err and "parts are numbered from 1" in err
    # the build itself failing (OUT cannot be created): 1
    (tmp_path / "file").write_text("")
    assert main(["shard", str(src), str(tmp_path / "file" / "out"), "--quiet"]) == 1


def test_manifest_build_with_absent_audio(tmp_path):
    src = tmp_path / "c"
    make_corpus(src, 3)
    rows = [f"set_a/{i % 3}/{i:02x}/utt{i:04d}.opus,set_a/{i % 3}/{i:02x}/utt{i:04d}.txt,1.5" for i in range(3)]
    (src / "m.csv").write_text("\n".join(rows + ["gone/a.opus,gone/a.txt,1.0"]) + "\n")
    res = build(src, tmp_path / "out", manifest=src / "m.csv")
    assert res.index["totals"] == {"input_rows": 4, "samples": 3, "seconds": 4.5, "rejected": 1}
    assert res.index["rejected"] == {"audio_missing": 1}


def test_rerun_redoes_a_shard_whose_input_changed(tmp_path):
    src = tmp_path / "c"
    sources = make_corpus(src, 8)
    first = build(src, tmp_path / "out", shard_size=2)
    txt = (src / sources[0]).with_suffix(".txt")
    txt.write_text("исправленная расшифровка")
    st = txt.stat()
    os.utime(txt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = build(src, tmp_path / "out", shard_size=2)
    assert again.written == 1 and again.skipped == first.written - 1
    texts = {n: b for shard in read_dataset(tmp_path / "out").values() for n, b in shard.items()}
    assert texts[sources[0][: -len(".opus")] + ".txt"].decode() == "исправленная расшифровка"


def test_audio_root_reads_a_manifest_held_elsewhere(tmp_path):
    """`shard MANIFEST OUT --audio-root DIR`: the manifest's relative paths from DIR, the same build as the
    `shard DIR OUT --manifest MANIFEST` spelling (same shard bytes, the same keys)."""
    src = tmp_path / "c"
    make_corpus(src, 4)
    rows = [f"set_a/{i % 3}/{i:02x}/utt{i:04d}.opus,set_a/{i % 3}/{i:02x}/utt{i:04d}.txt,1.5" for i in range(4)]
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("\n".join(rows) + "\n")
    assert main(["shard", str(src), str(tmp_path / "a"), "--manifest", str(manifest), "--quiet", "--workers", "1"]) == 0
    assert main(["shard", str(manifest), str(tmp_path / "b"), "--audio-root", str(src), "--quiet",
                 "--workers", "1"]) == 0
    assert read_dataset(tmp_path / "a") == read_dataset(tmp_path / "b")
    assert main(["shard", str(manifest), str(tmp_path / "c2"), "--audio-root", str(src), "--manifest",
                 str(manifest)]) == 2


def test_absolute_manifest_paths_do_not_carry_the_machines_layout(tmp_path):
    """A NeMo manifest with absolute paths outside its folder: keys from the audio files' common directory."""
    src = tmp_path / "home" / "user" / "data" / "open_stt"
    sources = make_corpus(src, 4)
    manifest = tmp_path / "lists" / "train.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("".join(json.dumps({"audio_filepath": str(src / s), "duration": 1.5}) + "\n"
                                for s in sources))
    res = build(manifest, tmp_path / "out")
    keys = {k for shard in read_dataset(tmp_path / "out").values() for k in shard}
    assert res.index["totals"]["samples"] == 4 and keys
    assert not any("home" in k or "user" in k for k in keys), sorted(keys)[:3]
    # all four lie under open_stt/set_a: their paths from there, as the keys of a relative manifest would be
    stems = {str(Path(s).relative_to("set_a").with_suffix("")) for s in sources}
    assert {k.rsplit(".", 1)[0] for k in keys} == stems
