"""Hostile tar shards and a memory-bounded child process, for the tests of what fastasr refuses to read.

The tars are written block by block (tarfile cannot write a sparse member): a GNU sparse member whose few stored
bytes expand to gigabytes, and a member whose header claims more bytes than the archive holds. `run_bounded` runs a
script in a fresh interpreter whose address space may grow only `margin_mb` past what its warm-up left, so a read
that allocates what a header claims fails there (MemoryError) instead of swapping the machine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

TESTS = Path(__file__).resolve().parent
GIB = 2**30


def member_blocks(name: str, data: bytes, *, claimed: int | None = None) -> bytes:
    """A regular member (GNU format); `claimed`: the size its header states instead of len(data)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data) if claimed is None else claimed, 0, 0o644
    return info.tobuf(tarfile.GNU_FORMAT) + _padded(data)


def sparse_blocks(name: str, data: bytes, real_size: int) -> bytes:
    """A GNU sparse member ('S'): `data` stored as the last bytes of a file of `real_size` bytes, the rest a hole
    that tarfile's reader fills with zeros."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = len(data), 0, 0o644, tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    assert len(header) == tarfile.BLOCKSIZE, "keep the name short: one header block"
    header[386:398] = tarfile.itn(real_size - len(data), 12, tarfile.GNU_FORMAT)  # the one stored region: offset
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # and length
    header[482] = 0  # no extended sparse headers
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)  # the expanded size
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header) + _padded(data)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def write_raw_tar(path: Path, blocks: list[bytes], *, end: bool = True) -> None:
    """Members' blocks in order, then (with `end`) the end-of-archive blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(blocks) + (b"\0" * 2 * tarfile.BLOCKSIZE if end else b""))


def sample_blocks(key: str, ext: str, audio: bytes, text: str, duration: float) -> list[bytes]:
    """A fastasr sample's three members."""
    meta = json.dumps({"duration": round(duration, 6)}).encode()
    return [member_blocks(f"{key}.{ext}", audio), member_blocks(f"{key}.txt", text.encode()),
            member_blocks(f"{key}.json", meta)]


def long_flac(seconds: float, sr: int = 16000) -> bytes:
    """Silence as 16-bit FLAC, written a minute at a time: an hour is ~170 KB that decodes to 230 MB of float32."""
    buf = io.BytesIO()
    minute = np.zeros(sr * 60, np.int16)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        left = int(seconds * sr)
        while left > 0:
            f.write(minute[: min(left, minute.size)])
            left -= minute.size
    return buf.getvalue()


LIMIT = '''
def limit_memory(margin_mb):
    import resource
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + margin_mb * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
'''


def run_bounded(warm_up: str, bounded: str, *, margin_mb: int = 150, timeout: float = 180) -> dict:
    """Run `warm_up` (imports, a first pass that loads codecs and kernels), then `bounded` with the address space
    limited to what the process holds plus margin_mb; `bounded` assigns a JSON-able `result`, returned here."""
    script = "\n".join([f"import sys; sys.path.insert(0, {str(TESTS)!r})", LIMIT, warm_up,
                        f"limit_memory({margin_mb})", bounded, "import json; print('RESULT ' + json.dumps(result))"])
    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])
