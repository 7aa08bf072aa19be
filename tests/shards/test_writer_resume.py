"""A build killed with SIGKILL mid-run, then rerun, gives exactly the dataset of a clean build."""

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from corpus_helpers import build, make_corpus, shard_bytes, write_utt


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


def test_killed_between_tar_and_sidecar_the_shard_is_redone(tmp_path, monkeypatch):
    """A rebuild with other text options is killed after its new tar is in place but before its sidecar is: a rerun
    with the first options must not take the old sidecar for the new tar."""
    import fastasr.shards.writer as shard
    from fastasr.text.normalization import TextConfig

    src, out = tmp_path / "c", tmp_path / "out"
    for i in range(4):
        write_utt(src, f"u{i}.opus", "ёлка зелёная", seed=i)
    fractions = {"train": 1.0, "val": 0.0, "test": 0.0}
    folded = shard.ShardOptions(split_fractions=fractions)
    kept = shard.ShardOptions(text=TextConfig(fold_yo=False), split_fractions=fractions)
    shard.build_shards(src, out, folded, workers=1, progress=False)

    real_write_text = Path.write_text

    def killed_at_sidecar(self, *args, **kwargs):
        if ".meta" in str(self):
            raise KeyboardInterrupt("killed")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_at_sidecar)
    with pytest.raises(KeyboardInterrupt):
        shard.build_shards(src, out, kept, workers=1, progress=False)
    monkeypatch.setattr(Path, "write_text", real_write_text)

    rerun = shard.build_shards(src, out, folded, workers=1, progress=False)
    assert rerun.written == 1 and rerun.skipped == 0
    with tarfile.open(out / "train" / "shard-000000.tar") as tar:
        texts = {tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")}
    assert texts == {"елка зеленая"}


def test_parts_of_different_listings_do_not_merge(tmp_path):
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 8)
    build(src, out, shard_size=2, part=(1, 2))
    write_utt(src, "late/added.opus", "добавлено позже")  # the corpus changes between the two parts
    with pytest.raises(ValueError, match="plan"):
        build(src, out, shard_size=2, part=(2, 2))
    assert not (out / "index.json").exists()
