"""--group-by: every group wholly in one split (a property over random groupings), each rule's groups, and the rule
and group counts in index.json and `fastasr stats`."""

import json

import pytest
from corpus_helpers import make_corpus, read_dataset, write_utt
from hypothesis import given, settings
from hypothesis import strategies as st

from fastasr.cli import main
from fastasr.corpus.grouping import GroupRule, group_of, parse_group_by
from fastasr.corpus.plan import plan_rows
from fastasr.corpus.rows import Row
from fastasr.corpus.split import assign_split, parse_fractions
from fastasr.errors import UserError
from fastasr.shards.stats import compute_stats

fractions = st.lists(st.integers(0, 5), min_size=3, max_size=3).filter(lambda v: sum(v) > 0)


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.one_of(st.none(), st.sampled_from("abcdefgh")), min_size=1, max_size=60),
       seed=st.integers(0, 10**6), parts=fractions, segments=st.booleans())
def test_every_group_lands_in_one_split(labels, seed, parts, segments):
    fr = parse_fractions(",".join(map(str, parts)))
    # rows of a few recordings, as whole files or as segments of them; some without a speaker
    rows = [Row(f"d{i % 3}/r{i % 7}.wav", f"/c/d{i % 3}/r{i % 7}.wav", text="да", speaker=spk,
                offset=float(i) if segments else None, length=1.0 if segments else None)
            for i, spk in enumerate(labels)]
    rows = list({r.key: r for r in rows}.values())  # keys are unique once duplicates are rejected
    indices = list(range(len(rows)))
    for rule in ("speaker", "recording", "dir", r"^d(\d)/"):
        if rule == "speaker" and all(r.speaker is None for r in rows):
            with pytest.raises(UserError, match="no row of SOURCE has a group"):
                plan_rows(rows, seed, fr, 7, parse_group_by(rule))
            continue
        plan = plan_rows(rows, seed, fr, 7, parse_group_by(rule))
        counts = plan.group_counts
        by_split = {s: [] for s in counts}
        for shard in plan.shards:
            by_split[shard.split] += [(rows[i].key, int(i)) for i in shard.rows]
        groups = {i: g for i in indices if (g := group_of(rows[i], parse_group_by(rule), None)) is not None}
        split_of = {i: s for s, items in by_split.items() for _, i in items}
        assert sorted(split_of) == indices  # every row planned exactly once
        assert all(items == sorted(items) for items in by_split.values())  # shards cut from each split's sorted keys
        seen: dict[str, str] = {}
        for i, g in groups.items():
            assert seen.setdefault(g, split_of[i]) == split_of[i], (rule, g)
            assert split_of[i] == assign_split(g, seed, fr)  # the group alone decides: adding rows moves nothing
        for i in set(indices) - set(groups):  # no group: split on its own key, as without a rule
            assert split_of[i] == assign_split(rows[i].key, seed, fr)
        ungrouped = {s: sum(1 for i in set(indices) - set(groups) if split_of[i] == s) for s in by_split}
        assert counts == {s: len({g for i, g in groups.items() if split_of[i] == s}) + ungrouped[s]
                          for s in by_split}


def test_rules(tmp_path):
    txt = tmp_path / "x.txt"
    txt.write_text("Ёлка-палка!", encoding="utf-8")
    row = Row("set_a/0/00/x.opus", str(tmp_path / "x.opus"), text_path=str(txt), speaker="s7")
    assert group_of(row, parse_group_by("dir"), None) == "set_a/0/00"
    assert group_of(row, parse_group_by("recording"), None) == "set_a/0/00/x.opus"
    assert group_of(row, parse_group_by("speaker"), None) == "s7"
    from fastasr.text.normalization import TextConfig

    assert group_of(row, parse_group_by("text"), TextConfig()) == "елкапалка"
    assert group_of(Row("a.wav", "a.wav", text="в 1999"), parse_group_by("text"), TextConfig()) is None
    assert group_of(Row("a.wav", "a.wav", text_path=str(tmp_path / "gone.txt")), GroupRule("text"),
                    TextConfig()) is None
    assert group_of(row, parse_group_by(r"^([^/]+)/"), None) == "set_a"
    assert group_of(row, parse_group_by(r"\d/\d\d"), None) == "0/00"  # no group: the whole match
    assert group_of(row, parse_group_by(r"^nothing"), None) is None
    with pytest.raises(UserError, match="--group-by"):
        parse_group_by("(")


def test_group_by_dir_and_text_end_to_end(tmp_path, capsys):
    src = tmp_path / "c"
    make_corpus(src, 24)  # 3 top folders x several subfolders
    for i in range(6):  # one sentence read six times, in six places
        write_utt(src, f"read/{i}/s.wav", "Тихо шумит лес.", seed=i)
    out = tmp_path / "out"
    assert main(["shard", str(src), str(out), "--group-by", "^([^/]+)/", "--shard-size", "5", "--quiet",
                 "--workers", "1"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["group_by"] == "^([^/]+)/"
    assert sum(v["groups"] for v in index["splits"].values()) == 2  # set_a, read
    split_of_group = {}
    for path, members in read_dataset(out).items():
        for name, data in members.items():
            if name.endswith(".json"):
                assert split_of_group.setdefault(json.loads(data)["group"], path.split("/")[0]) == path.split("/")[0]
    assert set(split_of_group) == {"set_a", "read"}

    assert main(["shard", str(src), str(tmp_path / "t"), "--group-by", "text", "--quiet", "--workers", "1"]) == 0
    splits = {path.split("/")[0] for path, members in read_dataset(tmp_path / "t").items()
              for name in members if name.startswith("read/")}
    assert len(splits) == 1
    summary = compute_stats(tmp_path / "t")
    assert summary["group_by"] == "text"
    sentences = {p.read_text(encoding="utf-8").lower().strip(" .") for p in src.rglob("*.txt")}
    assert len(sentences) < 24 + 6  # the corpus repeats sentences too
    assert sum(b["groups"] for b in summary["splits"].values()) == summary["all"]["groups"] == len(sentences)
    assert main(["stats", str(tmp_path / "t")]) == 0
    assert "groups (--group-by text) of the samples in the shards" in capsys.readouterr().out
