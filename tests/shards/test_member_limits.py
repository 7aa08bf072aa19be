"""`fastasr index` and `fastasr stats` read a tar member only after its header passed the limits (scan.py): a sparse
member (a few stored bytes, gigabytes once expanded) or one over its size limit makes its KEY group a rejected group
in rejected.tsv (index) or a counted skip (stats); the rest of the shard is read as before. Run in a child process
whose address space is limited (bounds_helpers), so a regression fails with MemoryError instead of swapping."""

from __future__ import annotations

import json

import pytest
from bounds_helpers import GIB, member_blocks, run_bounded, sample_blocks, sparse_blocks, write_raw_tar
from data_shards import make_utts, write_shards

from fastasr.shards.index import read_rejected_tsv
from fastasr.shards.stats import format_table

INDEX = """
from fastasr.cli import main
from fastasr.shards import scan

def index(shard, out):
    return main(["index", "--quiet", shard, "--out", out, "--workers", "1"])

index(%r, %r)  # warm-up on an intact shard
scan.MAX_TEXT_MEMBER_BYTES = 200  # so that one real json member is over its limit
"""


def test_index_rejects_sparse_and_oversized_members(tmp_path):
    utts = make_utts(6, seed=8)
    good = [block for u in utts for block in sample_blocks(u.key, u.ext, u.audio, u.text, u.duration)]
    write_raw_tar(tmp_path / "good.tar", good)
    bad = {1: "sparse_member", 3: "sparse_member", 4: "member_too_large"}
    blocks = []
    for i, u in enumerate(utts):
        audio = (sparse_blocks(f"{u.key}.{u.ext}", u.audio[:2048], 8 * GIB) if i == 1
                 else member_blocks(f"{u.key}.{u.ext}", u.audio))
        text = sparse_blocks(f"{u.key}.txt", b"abc", 8 * GIB) if i == 3 else member_blocks(f"{u.key}.txt",
                                                                                          u.text.encode())
        meta = json.dumps({"duration": u.duration, "pad": "x" * (300 if i == 4 else 0)}).encode()
        blocks += [audio, text, member_blocks(f"{u.key}.json", meta)]
    write_raw_tar(tmp_path / "bad.tar", blocks)
    out = tmp_path / "out" / "index.json"
    got = run_bounded(INDEX % (str(tmp_path / "good.tar"), str(tmp_path / "warm" / "index.json")),
                      f"result = index({str(tmp_path / 'bad.tar')!r}, {str(out)!r})")
    assert got == 0
    rejected = {(row[0], row[1]) for row in read_rejected_tsv(out.parent / "rejected.tsv")}
    assert rejected == {(f"{tmp_path / 'bad.tar'}#{utts[i].key}", reason) for i, reason in bad.items()}
    table = json.loads((out.parent / "durations-train.json").read_text())["shards"][str(tmp_path / "bad.tar")]
    assert [d is None for d in table] == [i in bad for i in range(len(utts))]


STATS = """
from fastasr.shards.stats import compute_stats

compute_stats(%r)  # warm-up on intact shards
"""


def test_stats_skip_and_count_sparse_members(tmp_path):
    utts = make_utts(5, seed=9)
    for out in (tmp_path / "good", tmp_path / "bad"):
        write_shards(out, utts, [5], durations=False)  # durations from KEY.json: every json member is read
    blocks = []
    for i, u in enumerate(utts):
        if i == 2:
            blocks += [member_blocks(f"{u.key}.{u.ext}", u.audio), member_blocks(f"{u.key}.txt", u.text.encode()),
                       sparse_blocks(f"{u.key}.json", b'{"duration": 1.0}', 8 * GIB)]
        else:
            blocks += sample_blocks(u.key, u.ext, u.audio, u.text, u.duration)
    write_raw_tar(tmp_path / "bad" / "train" / "shard-000000.tar", blocks)
    summary = run_bounded(STATS % str(tmp_path / "good"), f"result = compute_stats({str(tmp_path / 'bad')!r})")
    assert summary["all"]["samples"] == 4
    assert summary["all"]["hours"] * 3600 == pytest.approx(sum(u.duration for i, u in enumerate(utts) if i != 2),
                                                           abs=1e-5)  # KEY.json holds µs
    assert summary["splits"]["train"]["skipped_in_shards"] == {"sparse_member": 1}
    assert "left out while reading the shards: sparse_member 1" in format_table(summary)
