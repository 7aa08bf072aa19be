"""One door for bytes: every reader of shards, indexes and duration tables opens them here.

A source is a local path (or `file://…`), `pipe:CMD` (WebDataset's spelling: CMD's standard output is the stream)
or any fsspec URL — `https://…`, `s3://…` (s3fs), `gs://…` (gcsfs), … — whose credentials and endpoints come from
the places that library reads (`AWS_ENDPOINT_URL`, `AWS_*`, `~/.aws/config`, `GOOGLE_APPLICATION_CREDENTIALS`, …).
Remote files are read in large blocks with read-ahead (streamed, never downloaded whole to disk); a read that fails
or comes back short (a connection reset, a truncated response) is retried from where it stopped, a bounded number of
times, then raised as an OSError naming the URL — which the loader treats like a damaged local shard.
Nothing else in fastasr knows about schemes, retries or credentials.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import subprocess
import time
from collections import Counter
from typing import BinaryIO

from fastasr.errors import UserError

log = logging.getLogger("fastasr.sources")

BLOCK_SIZE = 8 << 20  # bytes per remote request: big enough that request latency is noise, small enough to stream
RETRIES = 3  # further attempts after a failed or short read
RETRY_WAIT_S = 0.5  # doubled on each attempt
STATS: Counter = Counter()  # this process's retries ("retries") and the bytes read from remote sources ("bytes")


def is_pipe(url: str) -> bool:
    return str(url).startswith("pipe:")


def is_remote(url: str) -> bool:
    """True for URLs other than local paths and file:// (pipe: included)."""
    url = str(url)
    return is_pipe(url) or ("://" in url and not url.startswith("file://"))


def _local(url: str) -> str:
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def join(root: str, path: str) -> str:
    """`path` (from an index) resolved against the directory or URL prefix `root`; absolute paths and URLs stay."""
    root, path = str(root), str(path)
    if is_remote(path) or path.startswith("file://") or os.path.isabs(path):
        return path
    if is_remote(root):
        return root.rstrip("/") + "/" + path
    return os.path.join(_local(root), path)


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise UserError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        scheme = url.split("://", 1)[0]
        extra = {"s3": "s3fs (pip install 'fastasr[s3]')", "gs": "gcsfs (pip install 'fastasr[gcs]')",
                 "gcs": "gcsfs (pip install 'fastasr[gcs]')", "http": "aiohttp", "https": "aiohttp"}.get(scheme)
        hint = f"; it needs {extra}" if extra else ""
        raise UserError(f"{url}: cannot open {scheme}:// URLs ({err}){hint}") from None


class RemoteFile(io.RawIOBase):
    """A seekable, retrying reader over one remote file (fsspec underneath, opened again after a failure)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.fs, self.path = _filesystem(url)
        self.size = int(self.fs.size(self.path))
        self.pos = 0
        self._f = None

    def _open(self):
        if self._f is None:
            self._f = self.fs.open(self.path, "rb", block_size=BLOCK_SIZE, cache_type="readahead")
        self._f.seek(self.pos)
        return self._f

    def _drop(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), max(0, self.size - self.pos))
        if want == 0:
            return 0
        wait, error = RETRY_WAIT_S, None
        for attempt in range(RETRIES + 1):
            if attempt:
                STATS["retries"] += 1
                log.warning("%s: read at byte %d failed (%s); retry %d of %d", self.url, self.pos, error, attempt,
                            RETRIES)
                self._drop()
                time.sleep(wait)
                wait *= 2
            try:
                data = self._open().read(want)
            except Exception as exc:  # the transports raise their own types (aiohttp, botocore, …)
                error = f"{type(exc).__name__}: {exc}"
                continue
            if len(data) == want:
                buffer[:want] = data
                self.pos += want
                STATS["bytes"] += want
                return want
            error = f"short read: {len(data)} of {want} bytes"
        self._drop()
        raise OSError(f"{self.url}: {error} (gave up after {RETRIES} retries)")

    def close(self) -> None:
        self._drop()
        super().close()


class PipeFile(io.RawIOBase):
    """`pipe:CMD`: the command's standard output; a non-zero exit status is an error at close (WebDataset's rule)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.proc.stdout.readinto(buffer)

    def close(self) -> None:
        if self.closed:
            return
        self.proc.stdout.close()
        err = self.proc.stderr.read().decode("utf-8", "replace").strip()
        self.proc.stderr.close()
        code = self.proc.wait()
        super().close()
        if code != 0:
            raise OSError(f"{self.url}: exit status {code}" + (f": {err.splitlines()[-1]}" if err else ""))


def open_input(url: str) -> BinaryIO:
    """A binary reader for `url` (see the module docstring). Local files and remote URLs are seekable; pipes are
    not (read them in streaming mode)."""
    url = str(url)
    if is_pipe(url):
        return io.BufferedReader(PipeFile(url), buffer_size=1 << 20)
    if is_remote(url):
        return io.BufferedReader(RemoteFile(url), buffer_size=1 << 20)
    return open(_local(url), "rb")


def read_bytes(url: str) -> bytes:
    with open_input(url) as f:
        return f.read()


def exists(url: str) -> bool:
    url = str(url)
    if is_pipe(url):
        return True
    if not is_remote(url):
        return os.path.exists(_local(url))
    fs, path = _filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise OSError(f"{url}: {type(exc).__name__}: {exc}") from None


def expand(patterns: list[str] | str) -> list[str]:
    """Brace patterns as WebDataset spells them (`shard-{000000..000099}.tar`, `{a,b}`), each expanded in order."""
    from braceexpand import braceexpand

    out = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        out.extend(braceexpand(pattern))
    return out


def describe(url: str) -> str:
    """How a URL reads in a log line (pipe commands quoted)."""
    return f"pipe:{shlex.quote(url[5:])}" if is_pipe(url) else str(url)
