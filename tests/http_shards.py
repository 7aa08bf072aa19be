"""A real HTTP server on 127.0.0.1 serving a directory (HEAD, GET with Range), counting the bytes it sends and
able to drop connections mid-body: what the loader meets on an HTTP shard store, started and stopped by the test."""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class ShardServer:
    """`with ShardServer(root) as server:` → server.url; server.sent[path] bytes of body sent per path;
    server.requests[path] GETs; server.drop[path] = n: the next n GETs of path stop after half their body;
    server.stall[path] = n: the next n GETs of path send half their body, then nothing more (the connection stays
    open until the server stops)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.sent: Counter = Counter()
        self.requests: Counter = Counter()
        self.drop: Counter = Counter()
        self.stall: Counter = Counter()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _target(self) -> tuple[str, Path] | None:
                rel = self.path.split("?", 1)[0].lstrip("/")
                path = (server.root / rel).resolve()
                if server.root.resolve() not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return rel, path

            def do_HEAD(self) -> None:
                found = self._target()
                if found is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(found[1].stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self) -> None:
                found = self._target()
                if found is None:
                    return
                rel, path = found
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                m = _RANGE.match(self.headers.get("Range", ""))
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # the last N bytes
                        start = max(0, size - int(m.group(2)))
                    status = 206
                with open(path, "rb") as f:
                    f.seek(start)
                    body = f.read(max(0, end - start + 1))
                with server.lock:
                    server.requests[rel] += 1
                    dropping = server.drop[rel] > 0
                    if dropping:
                        server.drop[rel] -= 1
                    stalling = not dropping and server.stall[rel] > 0
                    if stalling:
                        server.stall[rel] -= 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{size}")
                self.end_headers()
                out = body[: len(body) // 2] if dropping or stalling else body
                try:
                    self.wfile.write(out)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if stalling:
                    server.stopping.wait()
                    self.close_connection = True
                    return
                with server.lock:
                    server.sent[rel] += len(out)
                if dropping:
                    self.close_connection = True
                    self.connection.shutdown(2)  # a reset mid-body: the client sees a truncated response

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ShardServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def shard_bytes_sent(self) -> int:
        return sum(n for rel, n in self.sent.items() if rel.endswith(".tar"))


def shard_bytes(root: Path) -> int:
    return sum(os.path.getsize(p) for p in Path(root).rglob("*.tar"))
