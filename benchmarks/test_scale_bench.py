"""Open STT scale without audio (issue 22): every metadata path on a synthetic index and manifest of
FASTASR_SCALE_ROWS utterances (default 1 M; 16500000 for Open STT itself), each in a fresh process
(tools/openstt_scale.py), wall time and peak RSS above the imports in extra_info. Side by side in the same run: the
durations table parsed from JSON (what every reader did before) and mapped from its binary twin.

    make bench  # or: FASTASR_SCALE_ROWS=16500000 .venv/bin/python -m pytest benchmarks/test_scale_bench.py \
                #         --benchmark-enable --benchmark-only -q -s
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import openstt_scale  # noqa: E402

ROWS = int(os.environ.get("FASTASR_SCALE_ROWS", 1_000_000))


@pytest.fixture(scope="module")
def scale_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("openstt_scale")


def _once(benchmark, fn, *args):
    return benchmark.pedantic(fn, args=args, rounds=1, iterations=1)


def test_durations_table_json_vs_binary(benchmark, scale_dir):
    dest = openstt_scale.write_index(scale_dir, ROWS, 1000)
    parsed, mapped = _once(benchmark, openstt_scale.measure_table, dest / "durations-train.json")
    benchmark.extra_info.update(rows=ROWS, json=parsed, binary=mapped,
                                load_ratio=round(parsed["load_s"] / max(mapped["load_s"], 1e-3), 1))
    print(json.dumps(benchmark.extra_info))
    assert mapped["load_private_mb"] < parsed["load_private_mb"]


def test_loader_stats_and_index_paths(benchmark, scale_dir):
    dest = scale_dir / f"index-{ROWS}"
    if not (dest / "index.json").exists():
        openstt_scale.write_index(scale_dir, ROWS, 1000)
    results = _once(benchmark, openstt_scale.measure_paths, dest)
    benchmark.extra_info.update(rows=ROWS, paths=results)
    assert {r["path"] for r in results} >= {"table", "epoch_plan", "resume", "stats", "index_merge"}


@pytest.mark.parametrize("group_by", [None, "dir"])
def test_one_shard_task(benchmark, scale_dir, group_by):
    result = _once(benchmark, openstt_scale.measure_shard, scale_dir, ROWS, "1/1000", group_by)
    benchmark.extra_info.update(result)
    print(json.dumps(result))
