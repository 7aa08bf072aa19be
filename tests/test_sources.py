"""fastasr.sources against hostile inputs made here: a FIFO or a directory where a file should be, a server on
127.0.0.1 that accepts and never answers, a brace range with a digit too many."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from braceexpand import braceexpand
from http_shards import ShardServer
from wire_helpers import SilentServer, bounded

from fastasr import sources
from fastasr.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "shard.tar"
    os.mkfifo(fifo)  # no writer: a plain open() would wait for one forever
    with pytest.raises(OSError, match=r"not a regular file \(a FIFO\)"):
        bounded(lambda: sources.open_input(fifo), 10)
    with pytest.raises(OSError, match=r"not a regular file \(a directory\)"):
        sources.read_bytes(tmp_path)
    regular = tmp_path / "x.bin"
    regular.write_bytes(b"abc")
    (tmp_path / "link.bin").symlink_to(regular)
    assert [sources.read_bytes(p) for p in (regular, f"file://{regular}", tmp_path / "link.bin")] == [b"abc"] * 3
    with sources.open_input(regular) as f:
        assert f.seekable() and f.read(1) == b"a"


def test_a_server_that_never_answers_is_an_error_after_the_retries(monkeypatch):
    monkeypatch.setenv("FASTASR_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("FASTASR_READ_TIMEOUT", "0.3")
    monkeypatch.setattr(sources, "RETRY_WAIT_S", 0.01)
    retries = sources.STATS["retries"]
    with SilentServer() as server:
        url = f"{server.url}/corpus/index.json"
        with pytest.raises(OSError, match=f"{url}: .*gave up after {sources.RETRIES} retries"):
            bounded(lambda: sources.read_bytes(url), 30)
        assert server.accepted >= 1 + sources.RETRIES  # every try reached the server, and timed out there
    assert sources.STATS["retries"] == retries + sources.RETRIES


def test_a_missing_remote_file_is_not_retried(tmp_path):
    retries = sources.STATS["retries"]
    with ShardServer(tmp_path) as server:
        with pytest.raises(FileNotFoundError):
            sources.read_bytes(f"{server.url}/nothing.tar")
    assert sources.STATS["retries"] == retries


def test_timeouts_are_settings_that_reach_the_storage_libraries(monkeypatch):
    for name in ("FASTASR_CONNECT_TIMEOUT", "FASTASR_READ_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert sources.timeouts() == (sources.CONNECT_TIMEOUT_S, sources.READ_TIMEOUT_S)
    monkeypatch.setenv("FASTASR_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("FASTASR_READ_TIMEOUT", "7")
    assert sources.timeouts() == (2.5, 7.0)
    http, _ = sources._filesystem("https://example.invalid/c/index.json")
    timeout = http.client_kwargs["timeout"]
    assert (timeout.sock_connect, timeout.sock_read, timeout.total) == (2.5, 7.0, None)
    pytest.importorskip("s3fs")
    s3, _ = sources._filesystem("s3://bucket/c/index.json")
    assert s3.config_kwargs == {"connect_timeout": 2.5, "read_timeout": 7.0}
    for bad in ("soon", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("FASTASR_READ_TIMEOUT", bad)
        with pytest.raises(UserError, match=f"FASTASR_READ_TIMEOUT={bad!r}: wants a number of seconds > 0"):
            sources.timeouts()


PATTERNS = ["plain.tar", "s-{000000..000099}.tar", "{a,b}{1..3}", "python{2.{5..7},3.{2,3}}", "{07..10}",
            "{a..g..2}", "{4..1}", "{2..-1}", "{1..10..3}", "{10..1..3}", "{1..5..0}", "x{}y", "{a}", "{a,}",
            "{,x}", r"{1\{2,3}", r"a\,{b,c}", "a{b,{c,d}e}f", "{Z..a}", "{a..c}{x,y,z}{0..1}", "{{a,b},{c..e}}",
            "{x{1..3}}", "s3://b/{train,val}/shard-{0..9}.tar"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_expansion_is_counted_exactly_without_expanding(pattern):
    assert sources.expansion_size(pattern) == len(list(braceexpand(pattern)))


def test_expansion_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(sources, "MAX_EXPANSION", 10)
    assert sources.expand("s-{0..9}.tar") == [f"s-{i}.tar" for i in range(10)]
    with pytest.raises(UserError, match=r"'s-\{0..10\}.tar' expands to 11 names, more than 10"):
        sources.expand(["ok.tar", "s-{0..10}.tar"])
    with pytest.raises(UserError, match="unbalanced braces"):
        sources.expand("s-{0..3.tar")


def test_a_range_with_a_digit_too_many_is_refused_within_bounded_memory():
    # Expanded, this range is 100 million names (about 3 GB of strings): under a 1 GiB address space a regression
    # fails with MemoryError instead of swapping.
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from fastasr import sources
        from fastasr.errors import UserError
        try:
            sources.expand("x-{000000000..099999999}.tar")
        except UserError as err:
            print(err)
            sys.exit(3)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 3, done.stderr
    assert "expands to 100,000,000 names, more than 1,000,000" in done.stdout
