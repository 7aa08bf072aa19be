"""tools/openstt_scale.py at a reduced size (the 1 M and 16.5 M runs are benchmarks/test_scale_bench.py): every
metadata path runs on the synthetic index and gives the numbers the index itself implies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import openstt_scale  # noqa: E402


def test_every_path_runs_on_the_synthetic_index(tmp_path):
    dest = openstt_scale.write_index(tmp_path, 30_000, 500)
    index = json.loads((dest / "index.json").read_text())
    train = index["splits"]["train"]["samples"]
    assert index["totals"]["samples"] == 30_000 and train == 18_000  # 3 of every 5 shards are train
    got = {r["path"]: r for r in openstt_scale.measure_paths(dest)}
    assert got["table"]["shards"] == len(index["splits"]["train"]["shards"])
    assert 0 < got["epoch_plan"]["samples"] <= train // 48 + 500  # one of 48 readers' share
    assert got["epoch_plan"]["batches"] < got["rank_plan"]["batches"]  # one reader of the rank's six
    assert got["resume"]["skipped_batches"] == int(openstt_scale.DONE * got["rank_plan"]["batches"])
    assert got["reshard"]["epoch"] == 0 and 0 < got["reshard"]["delivered"] < train
    assert got["stats"]["samples"] == 30_000 and got["index_merge"]["samples"] == train
    for r in got.values():
        assert r["wall_s"] >= 0 and r["peak_rss_above_imports_mb"] >= 0


def test_one_shard_task_on_a_synthetic_manifest(tmp_path):
    got = openstt_scale.measure_shard(tmp_path, 3_000, "1/10", "dir")
    assert got["rows"] == 3_000 and got["group_by"] == "dir" and got["wall_s"] >= 0
    index = json.loads((tmp_path / "shards-3000" / "parts" / "index-1-of-10.json").read_text())
    t = index["totals"]  # the part's own rows (one shard's), each rejected: no audio behind the manifest
    assert 0 < t["input_rows"] < 3_000 and t["samples"] == 0 and sum(index["rejected"].values()) == t["input_rows"]
