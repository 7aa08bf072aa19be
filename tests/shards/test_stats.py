import json

import pytest
from corpus_helpers import build, make_corpus, write_utt

from fastasr.cli import main
from fastasr.shards.stats import compute_stats


def test_stats_and_plots(tmp_path, capsys):
    src = tmp_path / "c"
    make_corpus(src, 10, seconds=1.5)
    write_utt(src, "long/a.opus", "одна длинная фраза для проверки", seconds=3.0)
    write_utt(src, "bad/d.opus", "в 1999")
    build(src, tmp_path / "out", shard_size=3)
    s = compute_stats(tmp_path / "out", tmp_path / "plots")
    assert s["all"]["samples"] == 11 and s["all"]["hours"] == pytest.approx(18.0 / 3600)
    assert sum(b["samples"] for b in s["splits"].values()) == 11
    assert s["all"]["duration_percentiles"]["p0"] == 1.5 and s["all"]["duration_percentiles"]["p100"] == 3.0
    assert s["rejected"] == {"digits": 1} and s["input_rows"] == 12
    cps = s["all"]["cps_percentiles"]
    assert 0 < cps["p0"] <= cps["p50"] <= cps["p100"] < 25
    for p in s["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    assert main(["stats", str(tmp_path / "out"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["all"]["samples"] == 11
    assert main(["stats", str(tmp_path / "out")]) == 0
    assert "digits" in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "nothing")]) == 2  # not a shard directory: a user error


def test_durations_only_gives_the_shards_numbers(tmp_path, capsys):
    """--durations-only (the tables, no shard opened) against the stats read from the shards themselves; the JSON
    table when its binary twin is gone; an index without tables is refused by name."""
    import os

    src = tmp_path / "c"
    make_corpus(src, 14, seconds=1.5)
    write_utt(src, "long/a.opus", "одна длинная фраза для проверки", seconds=3.0)
    write_utt(src, "long/b.opus", "ещё одна фраза", seconds=2.25)
    build(src, tmp_path / "out", shard_size=4)
    full = compute_stats(tmp_path / "out")
    fast = compute_stats(tmp_path / "out", durations_only=True)
    for name, b in [*full["splits"].items(), ("all", full["all"])]:
        f = fast["all"] if name == "all" else fast["splits"][name]
        assert (f["samples"], f["hours"], f.get("duration_percentiles")) == (
            b["samples"], pytest.approx(b["hours"]), b.get("duration_percentiles"))
        assert "cps_percentiles" not in f and "words" not in f
    assert fast["rejected"] == full["rejected"] and fast["transcripts"] is False
    for sidecar in (tmp_path / "out").glob("durations-*.bin.json"):
        os.remove(sidecar)  # no binary twin: the JSON tables are read instead
    assert compute_stats(tmp_path / "out", durations_only=True)["all"] == fast["all"]
    assert main(["stats", str(tmp_path / "out"), "--durations-only"]) == 0
    assert "durations only" in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "out"), "--durations-only", "--plots", str(tmp_path / "p")]) == 2
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    for entry in index["splits"].values():
        del entry["durations"]
    (tmp_path / "out" / "index.json").write_text(json.dumps(index))
    assert main(["stats", str(tmp_path / "out"), "--durations-only"]) == 2
    assert "no durations table" in capsys.readouterr().err
