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
