import json

import pytest
from corpus_helpers import write_utt
from hypothesis import given, settings
from hypothesis import strategies as st

from fastasr.corpus.readers import read_source, walk_directory
from fastasr.corpus.rows import Row, make_key
from fastasr.errors import UserError


def test_walk_pairs_lone_files_and_order(tmp_path):
    write_utt(tmp_path, "b/2/x.opus", "два")
    write_utt(tmp_path, "a/1/y.WAV", "один")  # extension case does not matter
    write_utt(tmp_path, "a/1/z.flac", None)  # audio without transcript
    (tmp_path / "a/1/lone.txt").write_text("без звука")  # transcript without audio
    (tmp_path / "a/1/notes.md").write_text("ignored")
    rows = list(walk_directory(tmp_path))
    assert [r.source for r in rows] == ["a/1/lone.txt", "a/1/y.WAV", "a/1/z.flac", "b/2/x.opus"]
    lone, y, z, x = rows
    assert lone.audio is None and lone.text_path == str(tmp_path / "a/1/lone.txt")
    assert y.audio == str(tmp_path / "a/1/y.WAV") and y.text_path == str(tmp_path / "a/1/y.txt")
    assert z.text_path is None
    assert x.key == "b/2/x"


def test_walk_follows_symlinked_directories_once(tmp_path, caplog):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    write_utt(corpus, "a/x.opus", "раз")
    write_utt(elsewhere, "part2/y.opus", "два")
    (corpus / "b").symlink_to(elsewhere / "part2", target_is_directory=True)  # data assembled from links
    (corpus / "c").symlink_to(elsewhere / "part2", target_is_directory=True)  # the same data a second time
    (corpus / "a/loop").symlink_to(corpus, target_is_directory=True)  # a link back up the tree
    with caplog.at_level("WARNING", logger="fastasr.shard"):
        rows = list(walk_directory(corpus))
    assert [r.source for r in rows] == ["a/x.opus", "b/y.opus"]
    assert rows[1].audio == str(corpus / "b/y.opus") and rows[1].text_path == str(corpus / "b/y.txt")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(corpus / "a/loop") in warned and str(corpus / "c") in warned


def test_key_escapes_dots_in_basename():
    assert make_key("public_youtube1120_hq/0/00/03de1fb6b14c.opus") == "public_youtube1120_hq/0/00/03de1fb6b14c"
    assert make_key("a.b/c.d.e.wav") == "a.b/c%2Ed%2Ee"  # dots in folders are harmless, in the basename escaped
    assert make_key("a/100%.opus") == "a/100%25"
    assert make_key("a/x%2E.opus") != make_key("a/x..opus")


def test_csv_manifest(tmp_path):
    write_utt(tmp_path, "d/a.wav", "первый")
    write_utt(tmp_path, "d/b.opus", "второй")
    (tmp_path / "m.csv").write_text(
        "d/a.wav,d/a.txt,1.5\n"
        "d/b.opus,d/b.txt,1.5\n"
        "d/gone.opus,d/gone.txt,2.0\n"  # audio absent: a row, rejected later as audio_missing
        "\n"
        "onlyonefield\n"
    )
    root, rows = read_source(tmp_path, tmp_path / "m.csv")
    rows = list(rows)
    assert root == tmp_path
    assert [r.source for r in rows[:3]] == ["d/a.wav", "d/b.opus", "d/gone.opus"]
    assert rows[0].text_path == str(tmp_path / "d/a.txt")
    assert rows[3].reject == "manifest_malformed" and rows[3].source == "m.csv:5"
    # SOURCE may be the manifest itself: paths are relative to its folder
    _, rows2 = read_source(tmp_path / "m.csv")
    assert [r.source for r in rows2] == [r.source for r in rows]


def test_jsonl_manifest(tmp_path):
    a = write_utt(tmp_path, "w/a.wav", None)
    write_utt(tmp_path, "w/b.opus", "из файла")
    lines = [
        {"audio_filepath": "w/a.wav", "text": "встроенный текст", "duration": 1.5},
        {"audio_filepath": str(tmp_path / "w/b.opus"), "duration": 1.5},  # absolute path, no text: the .txt beside
        {"text": "нет пути"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n")
    rows = list(read_source(tmp_path, path)[1])
    assert rows[0] == Row(source="w/a.wav", audio=str(a), text="встроенный текст")
    assert rows[1].source == "w/b.opus" and rows[1].text is None and rows[1].text_path == str(tmp_path / "w/b.txt")
    assert [r.reject for r in rows[2:]] == ["manifest_malformed", "manifest_malformed"]
    assert rows[3].source == "m.jsonl:4"


def test_missing_source(tmp_path):
    with pytest.raises(UserError, match="SOURCE .*nope does not exist"):
        read_source(tmp_path / "nope")
    with pytest.raises(UserError, match="manifest .*nope.csv does not exist"):
        read_source(tmp_path, tmp_path / "nope.csv")
    (tmp_path / "notes.md").write_text("")
    with pytest.raises(UserError, match="not a known kind of source"):
        read_source(tmp_path / "notes.md")
    (tmp_path / "other.jsonl").write_text('{"path": "a.wav"}\n')
    with pytest.raises(UserError, match="neither NeMo"):
        read_source(tmp_path / "other.jsonl")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab.%/_-ё", min_size=1, max_size=8), min_size=1, max_size=20, unique=True))
def test_keys_are_one_to_one_and_dot_free(stems):
    stems = [s for s in stems if not s.startswith("/") and not s.endswith("/") and "//" not in s]
    keys = [make_key(s + ".opus") for s in stems]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert "." not in key.rpartition("/")[2]  # WebDataset would cut the key at the first dot
