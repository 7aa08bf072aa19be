"""Hostile inputs for the trust tests, made by the test: a server on 127.0.0.1 that accepts and never answers, a
bound on how long a call may take (a regression fails instead of hanging the suite), pipe payloads that leave a
marker file, and served copies of a shard directory whose index says what the test wants."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path


class SilentServer:
    """`with SilentServer() as server:` server.url; every connection is accepted, its request read by the kernel,
    and never answered (until the server stops)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            self.accepted += 1

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self.sock.close()


def bounded(fn, seconds: float):
    """fn()'s result (or its exception), failing the test when it has not returned within `seconds`."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def marker_pipe(marker: Path, shard: Path) -> str:
    """A pipe: source that reads `shard`, and leaves `marker` behind when it runs."""
    return f"pipe:touch {marker} && cat {shard}"


def index_copy(src: Path, dst: Path, edit=None, *, tables: bool = True) -> dict:
    """Copy the shard directory `src` to `dst` (shards, durations tables) and rewrite its index.json with
    edit(index) (in place); tables=False drops the splits' durations tables (their keys name the old paths)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    index = json.loads((src / "index.json").read_text(encoding="utf-8"))
    if not tables:
        for entry in index["splits"].values():
            entry.pop("durations", None)
    if edit is not None:
        edit(index)
    (dst / "index.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    return index
