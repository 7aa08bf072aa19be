"""One door for bytes: every reader of shards, indexes and duration tables opens them here.

A source is a local path (or `file://…`), `pipe:CMD` (WebDataset's spelling: CMD's standard output is the stream)
or any fsspec URL — `https://…`, `s3://…` (s3fs), `gs://…` (gcsfs), … — whose credentials and endpoints come from
the places that library reads (`AWS_ENDPOINT_URL`, `AWS_*`, `~/.aws/config`, `GOOGLE_APPLICATION_CREDENTIALS`, …).
Remote files are read in large blocks with read-ahead (streamed, never downloaded whole to disk); a read that fails
or comes back short (a connection reset, a truncated response) is retried from where it stopped, a bounded number of
times, then raised as an OSError naming the URL — which the loader treats like a damaged local shard. Every remote
request has a connect and a read timeout (`timeouts()`: FASTASR_CONNECT_TIMEOUT, FASTASR_READ_TIMEOUT, seconds), so a
server that accepts and never answers, or stalls mid-body, is a failed read like any other. Local sources must be
regular files: a FIFO, a device or a directory is an OSError, never a read that waits for a writer or never ends.
Nothing else in fastasr knows about schemes, retries or credentials. Which sources the paths inside an index may
name is decided by fastasr.shards.index.Reach.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shlex
import stat
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
CONNECT_TIMEOUT_S = 30.0  # default for FASTASR_CONNECT_TIMEOUT: seconds to set up a connection to a remote store
READ_TIMEOUT_S = 60.0  # default for FASTASR_READ_TIMEOUT: seconds a remote read may wait for the next bytes
MAX_EXPANSION = 1_000_000  # names one brace pattern may expand to: more is a typo (one digit too many), not a corpus


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
    """`path` resolved against the directory or URL prefix `root`; absolute paths and URLs stay. Mechanical: what an
    index may name is fastasr.shards.index.Reach's to decide, when the index is opened."""
    root, path = str(root), str(path)
    if is_remote(path) or path.startswith("file://") or os.path.isabs(path):
        return path
    if is_remote(root):
        return root.rstrip("/") + "/" + path
    return os.path.join(_local(root), path)


def shown(path: str, limit: int = 200) -> str:
    """A path from untrusted data as it goes into a one-line message."""
    text = repr(path)
    return text if len(text) <= limit else text[:limit] + "…"


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds for remote sources: FASTASR_CONNECT_TIMEOUT and FASTASR_READ_TIMEOUT, else
    CONNECT_TIMEOUT_S and READ_TIMEOUT_S. A read that waits longer fails, and is retried like a dropped
    connection."""
    return (_seconds("FASTASR_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S), _seconds("FASTASR_READ_TIMEOUT", READ_TIMEOUT_S))


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise UserError(f"{name}={text!r}: wants a number of seconds > 0")
    return value


def _storage_options(scheme: str) -> dict:
    """The timeouts, spelt as each storage library takes them (http(s) and gcs: aiohttp; s3: botocore)."""
    connect, read = timeouts()
    if scheme in ("http", "https", "gs", "gcs"):
        import aiohttp  # the transport of fsspec's http and of gcsfs

        # no total: a large block on a slow link may take long, as long as bytes keep coming
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        return {"client_kwargs" if scheme.startswith("http") else "session_kwargs": {"timeout": timeout}}
    if scheme in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": connect, "read_timeout": read}}
    return {}


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise UserError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
    scheme = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url, **_storage_options(scheme))
    except (ImportError, ValueError) as err:
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
        self.pos = 0
        self._f = None
        self.size = self._with_retries("asking its size", self._size)

    def _size(self) -> int:
        try:
            return int(self.fs.size(self.path))
        except FileNotFoundError as exc:
            # fsspec's http answers "not found" for a timeout or a dropped connection too: only a 4xx is final
            cause = exc.__cause__
            status = getattr(cause, "status", None)
            if cause is None or (isinstance(status, int) and 400 <= status < 500):
                raise _Final(exc) from None
            raise _Retry(f"{type(cause).__name__}: {cause}") from None

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

        def read() -> bytes:
            data = self._open().read(want)
            if len(data) != want:
                raise _Retry(f"short read: {len(data)} of {want} bytes")
            return data

        buffer[:want] = self._with_retries(f"read at byte {self.pos}", read)
        self.pos += want
        STATS["bytes"] += want
        return want

    def _with_retries(self, what: str, attempt):
        """attempt()'s result; a failure (an error, a short read, a timeout) is tried again RETRIES times, the file
        reopened after waits doubling from RETRY_WAIT_S, then raised as an OSError naming the URL."""
        wait, error = RETRY_WAIT_S, None
        for n in range(RETRIES + 1):
            if n:
                STATS["retries"] += 1
                log.warning("%s: %s failed (%s); retry %d of %d", self.url, what, error, n, RETRIES)
                self._drop()
                time.sleep(wait)
                wait *= 2
            try:
                return attempt()
            except _Final as final:
                self._drop()
                raise final.error from None
            except _Retry as failed:
                error = str(failed)
            except Exception as exc:  # the transports raise their own types (aiohttp, botocore, …)
                error = f"{type(exc).__name__}: {exc}"
        self._drop()
        raise OSError(f"{self.url}: {error} (gave up after {RETRIES} retries)")

    def close(self) -> None:
        self._drop()
        super().close()


class _Retry(Exception):
    """A failure worth another try, as its message says it (a short read, a timeout behind "not found")."""


class _Final(Exception):
    """A failure that another try would only repeat (the file is not there)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


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
    return _open_regular(_local(url))


def _open_regular(path: str) -> BinaryIO:
    """A local regular file, opened for reading. Opened without blocking, then checked, so that a FIFO (whose
    open would wait for a writer), a device or a directory is refused instead of read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or other special file")
            raise OSError(f"{path}: not a regular file ({kind})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(url: str, limit: int | None = None) -> bytes:
    """The whole of `url`; with `limit`, OSError (naming it) for a source longer than `limit` bytes, found after
    reading at most limit + 1 of them."""
    with open_input(url) as f:
        if limit is None:
            return f.read()
        parts, got = [], 0
        while got <= limit:  # in blocks: read(limit + 1) would allocate the whole limit for a small file
            block = f.read(min(BLOCK_SIZE, limit + 1 - got))
            if not block:
                break
            parts.append(block)
            got += len(block)
    data = b"".join(parts)
    if len(data) > limit:
        raise OSError(f"{describe(url)} is larger than {limit:,} bytes, more than any metadata file fastasr reads")
    return data


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
    """Brace patterns as WebDataset spells them (`shard-{000000..000099}.tar`, `{a,b}`), each expanded in order.
    A pattern is counted before it is expanded: more than MAX_EXPANSION names, or unbalanced braces, is a
    UserError."""
    from braceexpand import UnbalancedBracesError, braceexpand

    out = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        n = expansion_size(pattern)
        if n > MAX_EXPANSION:
            raise UserError(f"{shown(pattern)} expands to {n:,} names, more than {MAX_EXPANSION:,} (a brace range "
                            "with a digit too many?); give a smaller range, or several patterns")
        try:
            out.extend(braceexpand(pattern))
        except UnbalancedBracesError:
            raise UserError(f"{shown(pattern)}: unbalanced braces (a pattern is 'shard-{{000000..000099}}.tar' or "
                            "'{a,b}'; a literal brace is written \\{)") from None
    return out


def _braces(text: str):
    """(position, character, depth before it) of each unescaped `{`, `}` and `,` of text."""
    depth, pos = 0, 0
    while pos < len(text):
        c = text[pos]
        if c == "\\":
            pos += 2
            continue
        if c in "{},":
            yield pos, c, depth
            depth += (c == "{") - (c == "}")
        pos += 1


def expansion_size(pattern: str) -> int:
    """How many names braceexpand(pattern) yields, counted from the pattern's parts without making one (its grammar:
    a product of literals and {…} items; a range counts its members, {a,b,…} the sum of its alternatives, any other
    {…} stays literal)."""
    n, start = 1, 0
    for pos, c, depth in _braces(pattern):
        if c == "{" and depth == 0:
            start = pos
        elif c == "}" and depth == 1:
            n *= _expression_size(pattern[start + 1:pos])
    return n


def _expression_size(expr: str) -> int:
    from braceexpand import char_range_re, int_range_re, make_char_range

    m = int_range_re.match(expr)
    if m:
        first, last = int(m.group(1)), int(m.group(2))
        step = (int(m.group(3)) or 1) if m.group(3) else 1
        return len(range(first, last + 1, step) if first < last else range(first, last - 1, -step))
    m = char_range_re.match(expr)
    if m:
        return len(make_char_range(*m.groups()))
    alternatives, start, depth = [], 0, 0
    for pos, c, before in _braces(expr):
        depth = before + (c == "{") - (c == "}")
        if c == "," and before == 0:
            alternatives.append(expr[start:pos])
            start = pos + 1
    if depth != 0 or not alternatives:  # not a sequence: the braces stay, their inside is expanded
        return expansion_size(expr)
    return sum(expansion_size(a) for a in [*alternatives, expr[start:]])


def describe(url: str) -> str:
    """How a URL reads in a log line (pipe commands quoted)."""
    return f"pipe:{shlex.quote(url[5:])}" if is_pipe(url) else str(url)
