"""Shards read from HTTP and S3-compatible servers (real ones, started here on 127.0.0.1), pipe: sources and faults on
the wire: the same batches as the local loader, each shard byte fetched once, a dropped connection survived."""

from __future__ import annotations

import json
import logging
import shutil
import socket

import pytest
import torch
from data_shards import make_utts, write_shards
from http_shards import ShardServer, shard_bytes

from fastasr import sources
from fastasr.data import build_loader

KW = dict(max_batch_seconds=4.0, seed=5)


@pytest.fixture(scope="module")
def utts():
    return make_utts(30, seed=4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, utts):
    out = tmp_path_factory.mktemp("remote_shards")
    write_shards(out, utts, [8, 8, 7, 7])
    return out


def by_key(loader) -> dict[str, torch.Tensor]:
    out = {}
    for b in loader:
        for i, k in enumerate(b.keys):
            assert k not in out, f"{k} delivered twice"
            out[k] = b.audio[i, : b.audio_lens[i]].clone()
    return out


def test_http_epoch_equals_local_and_fetches_each_byte_once(shards, utts):
    local = by_key(build_loader(shards, num_workers=2, **KW))
    with ShardServer(shards) as server:
        remote = by_key(build_loader(server.url + "/", num_workers=2, **KW))
        sent = server.shard_bytes_sent()
    assert sorted(remote) == sorted(u.key for u in utts)
    for k in local:
        assert torch.equal(remote[k], local[k]), k
    assert sent / shard_bytes(shards) <= 1.05  # 4 shards ≥ 2 readers: each shard goes to one reader


def test_dropped_connection_is_retried(shards, utts, monkeypatch):
    monkeypatch.setattr(sources, "RETRY_WAIT_S", 0.01)
    retries = sources.STATS["retries"]
    with ShardServer(shards) as server:
        server.drop["train/shard-000001.tar"] = 1  # the first GET stops half-way
        loader = build_loader(server.url, num_workers=0, **KW)
        got = by_key(loader)
        assert server.requests["train/shard-000001.tar"] == 2
    assert sorted(got) == sorted(u.key for u in utts)
    assert sources.STATS["retries"] == retries + 1
    assert not {k for k in loader.stats[0] if k not in ("batches", "samples")}


def test_a_shard_that_keeps_failing_is_skipped_and_counted_with_its_url(shards, utts, monkeypatch, caplog):
    monkeypatch.setattr(sources, "RETRY_WAIT_S", 0.0)
    with ShardServer(shards) as server:
        server.drop["train/shard-000002.tar"] = 100
        loader = build_loader(server.url, num_workers=0, **KW)
        with caplog.at_level(logging.WARNING):
            got = by_key(loader)
        assert server.requests["train/shard-000002.tar"] == 1 + sources.RETRIES
    assert len(got) == len(utts) - 7
    assert loader.stats[0]["bad_shard"] == 1
    assert f"{server.url}/train/shard-000002.tar" in caplog.text


def test_resume_over_http_reads_no_consumed_shard(shards):
    with ShardServer(shards) as server:
        full = [b.keys for b in build_loader(server.url, num_workers=0, **KW)]
        before = dict(server.requests)
        resumed = [b.keys for b in build_loader(server.url, num_workers=0, skip_batches=len(full) - 1, **KW)]
        fetched = {k: n - before.get(k, 0) for k, n in server.requests.items() if n - before.get(k, 0)}
    assert resumed == full[-1:]
    # The plan came from the durations table; only the shard holding the last batch's samples was opened.
    assert sum(1 for k in fetched if k.endswith(".tar")) == 1, fetched


def test_pipe_sources(shards, utts, tmp_path):
    index = json.loads((shards / "index.json").read_text())
    for s in index["splits"]["train"]["shards"]:
        s["path"] = f"pipe:cat {shards / s['path']}"
    index["splits"]["train"].pop("durations")  # its keys name the local paths
    (tmp_path / "index.json").write_text(json.dumps(index))
    got = by_key(build_loader(tmp_path, num_workers=2, **KW))
    assert sorted(got) == sorted(u.key for u in utts)


def test_failing_pipe_is_a_counted_bad_shard(shards, tmp_path):
    index = json.loads((shards / "index.json").read_text())
    index["splits"]["train"]["shards"] = [{"path": "pipe:exit 3", "samples": 1, "seconds": 1.0}]
    index["splits"]["train"].pop("durations")
    (tmp_path / "index.json").write_text(json.dumps(index))
    loader = build_loader(tmp_path, num_workers=0, **KW)
    assert list(loader) == []
    assert loader.stats[0]["bad_shard"] == 1


def test_brace_expansion():
    assert sources.expand("s3://b/shard-{000..002}.tar") == [f"s3://b/shard-{i:03d}.tar" for i in range(3)]
    assert sources.expand(["a{x,y}", "b"]) == ["ax", "ay", "b"]
    assert sources.join("https://h/c/", "train/s.tar") == "https://h/c/train/s.tar"
    assert sources.join("https://h/c", "pipe:cat x") == "pipe:cat x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_compatible_server(shards, utts, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        # The standard places the S3 client reads: nothing fastasr-specific.
        for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                     "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("corpus-bucket")
        fs.put(str(shards) + "/", "corpus-bucket/ru", recursive=True)
        s3fs.S3FileSystem.clear_instance_cache()
        local = by_key(build_loader(shards, num_workers=2, **KW))
        remote = by_key(build_loader("s3://corpus-bucket/ru", num_workers=2, **KW))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
    assert sorted(remote) == sorted(u.key for u in utts)
    assert all(torch.equal(remote[k], local[k]) for k in local)


def test_a_remote_table_is_fetched_once_per_node(shards, tmp_path, monkeypatch):
    """Every build_loader on a node maps one local copy of a remote durations table instead of each reader parsing
    the JSON: fetched by the first, then read from the cache; the plan is the local table's; a rewritten index gets
    a copy of its own."""
    from fastasr.data.durations import durations_table

    monkeypatch.setenv("FASTASR_CACHE_DIR", str(tmp_path / "cache"))
    local = [b.keys for b in build_loader(shards, num_workers=2, **KW)]
    with ShardServer(shards) as server:
        loader = build_loader(server.url, num_workers=2, **KW)
        copy = loader.spec.durations
        assert copy.startswith(str(tmp_path / "cache")) and hasattr(durations_table(copy).shards, "value")
        assert [b.keys for b in loader] == local
        assert server.requests["durations-train.json"] == 1
        again = build_loader(server.url, num_workers=0, **KW)
        assert again.spec.durations == copy and server.requests["durations-train.json"] == 1
        index = json.loads((shards / "index.json").read_text())
        index["note"] = "written again"
        served = tmp_path / "served"
        shutil.copytree(shards, served)
        (served / "index.json").write_text(json.dumps(index))
    with ShardServer(served) as server:
        assert build_loader(server.url, num_workers=0, **KW).spec.durations != copy
        assert server.requests["durations-train.json"] == 1


def test_a_cache_that_cannot_be_written_falls_back_to_the_remote_table(shards, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("FASTASR_CACHE_DIR", str(blocked))
    local = [b.keys for b in build_loader(shards, num_workers=0, **KW)]
    with ShardServer(shards) as server, caplog.at_level(logging.WARNING, logger="fastasr.data"):
        loader = build_loader(server.url, num_workers=0, **KW)
        assert loader.spec.durations.startswith(server.url) and [b.keys for b in loader] == local
    assert "cannot keep a node copy" in caplog.text
