"""No endless epochs: an infinite stream whose epoch delivers no batch (every train shard missing, unreadable or all
bad) ends with one UserError naming the split and the skips by reason, in the loader, in `fastasr train` (one line,
exit 2) and under torchrun (the rank with no data exits, the job ends); a stream with some good shards goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from asr_helpers import make_shards
from data_shards import make_utts, write_shards

from fastasr.data import build_loader
from fastasr.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "train.device=cpu", "train.progress=false", "model.d_model=32", "model.n_heads=2",
        "model.n_layers=2", "model.pred_embed=16", "model.pred_hidden=32", "model.joint_dim=24",
        "model.subsampling_channels=8", "data.max_batch_seconds=2.0", "data.num_workers=0", "data.val_utterances=2"]


@pytest.fixture
def deadline():
    """A regression spins forever: fail it after a minute instead (the alarm interrupts the main thread)."""
    def expired(*_):
        raise TimeoutError("the stream did not end")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def spoil(out: Path, how: str) -> None:
    for tar in sorted((out / "train").glob("*.tar")):
        if how == "missing":
            tar.unlink()
        elif how == "garbage":
            tar.write_bytes(b"\x7f" * 4096)
        else:  # readable tars of undecodable audio: the same members, their bytes zeroed
            data = bytearray(tar.read_bytes())
            for ext in (b".opus", b".wav", b".flac"):
                at = data.find(ext)
                while at >= 0:
                    start = at - at % 512 + 512  # the member's data follows its header block
                    data[start : start + 300] = b"\0" * 300
                    at = data.find(ext, at + 1)
            tar.write_bytes(bytes(data))


@pytest.mark.parametrize("durations", [True, False], ids=["planned_from_table", "planned_from_tars"])
@pytest.mark.parametrize("how,reason", [("missing", "bad_shard"), ("garbage", "bad_shard"), ("undecodable", "decode")])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_epoch_with_no_batch_ends_the_stream(tmp_path, deadline, durations, how, reason, num_workers):
    write_shards(tmp_path, make_utts(6, seed=2), [3, 3], durations=durations)
    spoil(tmp_path, how)
    loader = build_loader(tmp_path, max_batch_seconds=4.0, num_workers=num_workers, infinite=True)
    with pytest.raises(UserError, match=rf"split 'train' of .*no data for rank 0, its epoch 0 delivered no batch "
                                        rf"\(skipped .*{reason} "):
        next(iter(loader))
    assert list(loader.stats) == [0]  # one epoch, not thousands


def test_a_stream_with_some_good_shards_goes_on(tmp_path, deadline):
    """Half the shards missing: each epoch, the reader dealt the missing one delivers nothing, the other delivers."""
    utts = make_utts(8, seed=4)
    write_shards(tmp_path, utts, [4, 4])
    (tmp_path / "train" / "shard-000000.tar").unlink()
    good = {u.key for u in utts[4:]}
    seen: dict[int, set] = {}
    loader = build_loader(tmp_path, max_batch_seconds=4.0, num_workers=2, infinite=True, seed=1)
    for n, b in enumerate(loader):
        if n == 30:
            break
        seen.setdefault(b.epoch, set()).update(b.keys)
    # Workers run their epochs on their own: an epoch is complete once both reported it (8 samples planned).
    complete = [e for e, counts in loader.stats.items() if counts["samples"] == 8]
    assert len(complete) >= 4 and all(seen.get(e) == good for e in complete), (seen, loader.stats)


def test_train_with_no_readable_shard_ends_with_one_line(tmp_path):
    make_shards(tmp_path / "data")
    for tar in (tmp_path / "data" / "train").glob("*.tar"):
        tar.unlink()
    proc = subprocess.run([sys.executable, "-m", "fastasr", "train", "--data", str(tmp_path / "data"), "--run-dir",
                           str(tmp_path / "run"), "--max-steps", "3", *TINY], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines[-1].startswith("fastasr train: error: split 'train' of ") and "bad_shard 3" in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr and len(lines) < 40  # the shards' warnings, once, then the error


def test_torchrun_rank_without_data_ends_the_job(tmp_path):
    """One train sample for two ranks: rank 1 has none and exits with the error; rank 0, waiting for it in its
    first all-reduce, is ended by torchrun; nothing hangs."""
    make_shards(tmp_path / "data", {"train": [1], "val": [2]})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "fastasr", "train", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
           "--max-steps", "3", *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0
    assert "fastasr train: error: split 'train' of " in proc.stderr and "no data for rank 1" in proc.stderr, \
        proc.stderr[-3000:]
