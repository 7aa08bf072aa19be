"""Typos and contradictions (issue 23, item 6): each is one stderr line that names the likely intent, exit 2; a
shard build that rejects every row exits 1 and says why; `fastasr shard --quiet` is quiet."""

import pytest
from asr_helpers import make_shards
from corpus_helpers import make_corpus, write_utt

from fastasr.cli import main
from fastasr.corpus.split import parse_fractions
from fastasr.errors import UserError


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("typos")
    make_shards(tmp / "shards")
    make_corpus(tmp / "corpus", 2)
    return {"tmp": tmp, "shards": tmp / "shards", "corpus": tmp / "corpus", "run": tmp / "run", "out": tmp / "out"}


TYPOS = [  # (arguments, what the one line must suggest)
    ("trian", "did you mean train?"),
    ("shrad {corpus} {out}", "did you mean shard?"),
    ("train --data {shards} --run_dir {run}", "did you mean --run-dir?"),
    ("train --data {shards} --run-dir {run} --max-stpes 3", "did you mean --max-steps?"),
    ("shard {corpus} {out} --quiett", "did you mean --quiet?"),
    ("shard {corpus} {out} --min_duration=1", "did you mean --min-duration?"),
    ("shard {corpus} {out} --verify ful", "did you mean full?"),
    ("--debgu stats {shards}", "did you mean --debug?"),
    ("train --data {shards} --run-dir {run} max_steps=20", "did you mean train.max_steps=20?"),
    ("train --data {shards} --run-dir {run} d_modle=256", "did you mean model.d_model=256?"),
    ("shard {corpus} {out} --split 0.7,0.2,0.2", "must sum to 1"),
]


@pytest.mark.parametrize("line,hint", TYPOS, ids=[t[1] for t in TYPOS])
def test_a_typo_is_one_line_with_a_suggestion(places, capsys, line, hint):
    assert main([a.format(**places) for a in line.split()]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err, err
    assert lines[0].startswith("fastasr") and ": error: " in lines[0] and hint in lines[0], lines[0]


def test_nothing_close_suggests_nothing(places, capsys):
    assert main(["shard", str(places["corpus"]), str(places["out"]), "--zzzzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err
    assert main(["train", "--data", str(places["shards"]), "--run-dir", str(places["run"]), "qqq=1"]) == 2
    err = capsys.readouterr().err
    assert "section.field=value" in err and "did you mean" not in err


def test_valid_input_parses_as_before(places, capsys):
    assert main(["shard", "--help"]) == 0
    assert "--quiet" in capsys.readouterr().out
    assert main(["stats", str(places["shards"])]) == 0


@pytest.mark.parametrize("spec", ["0.7,0.2,0.2", "0.5,0.2,0.2", "1.5,0,0"])
def test_split_fractions_must_sum_to_one(spec):
    with pytest.raises(UserError, match="--split fractions must sum to 1"):
        parse_fractions(spec)


def test_split_fractions_that_sum_to_one_and_whole_proportions():
    assert parse_fractions("0.6,0.2,0.2") == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert parse_fractions("0.1,0.2,0.7")["test"] == 0.7  # a float sum of 1.0000000000000002 is within 1e-6
    assert parse_fractions("0,0,1") == {"train": 0.0, "val": 0.0, "test": 1.0}
    assert parse_fractions("6,2,2") == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2})


def test_quiet_shard_prints_warnings_only(places, capsys):
    out = places["tmp"] / "quiet"
    assert main(["shard", str(places["corpus"]), str(out), "--quiet", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and " INFO " not in captured.err and "listed" not in captured.err, captured
    assert main(["shard", str(places["corpus"]), str(out), "--workers", "1"]) == 0  # without it, INFO again
    assert "listed 2 input rows" in capsys.readouterr().err


def test_a_build_that_rejects_every_row_exits_1(tmp_path, capsys):
    src = tmp_path / "c"
    write_utt(src, "a/x.opus", "")
    write_utt(src, "a/y.opus", "")
    write_utt(src, "b/z.opus", "мама", seconds=0.2)
    out = tmp_path / "out"
    assert main(["shard", str(src), str(out), "--quiet", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err
    assert lines[0].startswith("fastasr shard: error: all 3 input rows were rejected (transcript_empty 2, "), err
    assert "rejected.tsv" in lines[0] and (out / "rejected.tsv").exists()
    assert "e.g." in lines[-1]


def test_an_override_that_contradicts_a_flag_is_an_error(capsys):
    from fastasr.cli import main

    assert main(["train", "--print-config", "--max-steps", "10", "train.max_steps=20"]) == 2
    err = capsys.readouterr().err
    assert "--max-steps 10 and train.max_steps=20 set the same setting" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--print-config", "--max-steps", "10"]) == 0
