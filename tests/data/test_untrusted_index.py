"""The loader (and `fastasr train`) on indexes and servers that do not play fair, made here: a served index that
names pipe: commands or local files, a FIFO or a directory where a shard should be, a shard server that stalls
mid-body, malformed fields. Checked against what an honest local index delivers."""

from __future__ import annotations

import os

import pytest
from data_shards import make_utts, write_shards
from http_shards import ShardServer
from wire_helpers import bounded, index_copy, marker_pipe

from fastasr import sources
from fastasr.cli import main
from fastasr.data import build_loader
from fastasr.data.durations import durations_table
from fastasr.errors import UserError

KW = dict(max_batch_seconds=4.0, seed=5, num_workers=0)


@pytest.fixture(scope="module")
def utts():
    return make_utts(12, seed=8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, utts):
    out = tmp_path_factory.mktemp("untrusted_shards")
    write_shards(out, utts, [4, 4, 4])
    return out


def keys(loader) -> list[str]:
    return sorted(k for batch in loader for k in batch.keys)


def shard_keys(utts, *shard_numbers) -> list[str]:
    return sorted(u.key for i, u in enumerate(utts) if i // 4 in shard_numbers)


def test_a_served_index_runs_no_pipe_unless_allowed(shards, utts, tmp_path):
    marker = tmp_path / "ran"

    def piped(index):
        index["splits"]["train"]["shards"][0]["path"] = marker_pipe(marker, shards / "train/shard-000000.tar")

    index_copy(shards, tmp_path / "served", piped, tables=False)
    with ShardServer(tmp_path / "served") as server:
        with pytest.raises(UserError, match=r"splits.train.shards\[0\].path: 'pipe:touch .*allow_pipe=True"):
            build_loader(server.url, **KW)
        assert not marker.exists()
        assert main(["train", "--data", server.url, "--run-dir", str(tmp_path / "run")]) == 2
        assert not marker.exists() and not (tmp_path / "run").exists()
        assert keys(build_loader(server.url, allow_pipe=True, **KW)) == sorted(u.key for u in utts)
        assert marker.exists()
    marker.unlink()
    assert keys(build_loader(tmp_path / "served", **KW)) == sorted(u.key for u in utts)  # local: the user's file
    assert marker.exists()


def test_a_served_index_reads_no_local_path_unless_allowed(shards, utts, tmp_path):
    def local(index):
        index["splits"]["train"]["shards"][1]["path"] = str(shards / "train/shard-000001.tar")  # absolute

    index_copy(shards, tmp_path / "served", local, tables=False)
    os.remove(tmp_path / "served/train/shard-000001.tar")  # only the local one can deliver these samples
    with ShardServer(tmp_path / "served") as server:
        with pytest.raises(UserError, match=r"shards\[1\].path: '/.*' is not under .*allow_foreign_paths=True"):
            build_loader(server.url, **KW)
        assert keys(build_loader(server.url, allow_foreign_paths=True, **KW)) == sorted(u.key for u in utts)


def test_a_served_durations_table_is_within_reach_too(shards, utts, tmp_path):
    def table_elsewhere(index):
        index["splits"]["train"]["durations"] = str(shards / "durations-train.json")

    index_copy(shards, tmp_path / "served", table_elsewhere)
    with ShardServer(tmp_path / "served") as server:
        with pytest.raises(UserError, match=r"splits.train.durations: '/.*' is not under"):
            build_loader(server.url, **KW)
        loader = build_loader(server.url, allow_foreign_paths=True, **KW)
        assert loader.spec.durations == str(shards / "durations-train.json")
        assert keys(loader) == sorted(u.key for u in utts)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_shard_that_is_no_regular_file_is_a_counted_bad_shard(shards, utts, tmp_path, kind):
    index_copy(shards, tmp_path)
    target = tmp_path / "train/shard-000001.tar"
    target.unlink()
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    loader = build_loader(tmp_path, **KW)
    assert bounded(lambda: keys(loader), 60) == shard_keys(utts, 0, 2)  # a FIFO with no writer: never a hang
    assert loader.stats[0]["bad_shard"] == 1


def test_a_shard_server_that_stalls_mid_body_is_a_counted_bad_shard(shards, utts, monkeypatch):
    monkeypatch.setenv("FASTASR_READ_TIMEOUT", "0.3")
    monkeypatch.setattr(sources, "RETRY_WAIT_S", 0.0)
    durations_table.cache_clear()
    with ShardServer(shards) as server:
        server.stall["train/shard-000002.tar"] = 100  # every GET: half the body, then silence
        loader = build_loader(server.url, **KW)
        got = bounded(lambda: keys(loader), 60)
        assert server.requests["train/shard-000002.tar"] == 1 + sources.RETRIES
    assert got == shard_keys(utts, 0, 1)
    assert loader.stats[0]["bad_shard"] == 1


def test_malformed_fields_stop_the_loader_before_it_starts(shards, tmp_path):
    def no_path(index):
        del index["splits"]["train"]["shards"][2]["path"]

    index_copy(shards, tmp_path / "a", no_path)
    with pytest.raises(UserError, match=r"a/index.json: splits.train.shards\[2\].path must be a non-empty string"):
        build_loader(tmp_path / "a", **KW)
    index_copy(shards, tmp_path / "b")
    (tmp_path / "b/durations-train.json").write_text(
        '{"format": "fastasr-durations/1", "shards": {"train/shard-000000.tar": [0.5, -1]}}')
    durations_table.cache_clear()
    with pytest.raises(UserError, match=r"b/durations-train.json: shards\['train/shard-000000.tar'\]\[1\] must be"):
        build_loader(tmp_path / "b", **KW)


def test_metadata_larger_than_the_cap_is_refused_before_it_is_read_whole(shards, tmp_path, monkeypatch):
    import fastasr.shards.index as shard_index

    index_copy(shards, tmp_path / "served")
    size = (tmp_path / "served/index.json").stat().st_size
    read = []
    real_open = sources.open_input

    def counting(url, *a, **k):
        f = real_open(url, *a, **k)
        read_ = f.read
        f.read = lambda n=-1: read.append(n) or read_(n)
        return f

    monkeypatch.setattr(shard_index, "MAX_METADATA_BYTES", size - 1)
    monkeypatch.setattr(sources, "open_input", counting)
    with ShardServer(tmp_path / "served") as server:
        with pytest.raises(UserError, match=rf"index.json is larger than {size - 1:,} bytes"):
            build_loader(server.url, **KW)
    assert sum(read) <= size  # at most cap + 1 bytes asked for
    monkeypatch.setattr(shard_index, "MAX_METADATA_BYTES", size)
    durations_table.cache_clear()
    assert keys(build_loader(tmp_path / "served", **KW))  # at the cap: read
