"""Two real ranks (torch.distributed, gloo on CPU): the epoch is partitioned and both runs end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_shards import make_utts, write_shards

HERE = Path(__file__).resolve().parents[1]  # tests/, where the worker scripts live


def test_two_gloo_ranks_partition_the_epoch_and_end(tmp_path):
    utts = make_utts(15, seed=9)
    shards = tmp_path / "shards"
    write_shards(shards, utts, [9, 2, 4])  # 3 shards for 2 ranks: one rank holds more
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "data_rank_worker.py"), str(r), "2", init, str(shards),
                          str(tmp_path / f"rank{r}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=150)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    keys = [k for r in results for k in r["keys"]]
    assert sorted(keys) == sorted(u.key for u in utts)  # every utterance once across the ranks
    assert all(r["keys"] for r in results)
    assert [r["steps"] for r in results] == [25, 25]
    assert any(len(r["epochs"]) > 1 for r in results)  # infinite mode went on into the next epoch
