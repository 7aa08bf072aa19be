"""A build killed with SIGKILL mid-run, then rerun, gives exactly the dataset of a clean build."""

import os
import signal
import subprocess
import sys
import time

from corpus_helpers import make_corpus
from test_shard import build, shard_bytes


def test_resume_after_kill_9(tmp_path):
    src = tmp_path / "c"
    make_corpus(src, 120, seconds=1.0)
    clean = build(src, tmp_path / "clean", shard_size=4)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fastasr", "shard", str(src), str(out), "--shard-size", "4", "--workers", "2",
           "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / ".meta").glob("*/*.json"))) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the build finished before it could be killed; make the corpus larger"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the writer workers die mid-shard too
    proc.wait()
    assert not (out / "index.json").exists()
    done_before = len(list((out / ".meta").glob("*/*.json")))
    assert 3 <= done_before < len([s for v in clean.index["splits"].values() for s in v["shards"]])

    rerun = build(src, out, shard_size=4, workers=2)
    assert rerun.skipped >= 3 and rerun.written > 0
    assert shard_bytes(out) == shard_bytes(tmp_path / "clean")
    assert rerun.index["splits"] == clean.index["splits"] and rerun.index["totals"] == clean.index["totals"]
    assert (out / "rejected.tsv").read_bytes() == (tmp_path / "clean/rejected.tsv").read_bytes()
    assert not list(out.glob("*/.*tmp*")), "temporary files of the killed run were left behind"
