"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread, recording what
it is sent (headers and body), answering ``status`` (200 unless told otherwise)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 200
        self.got: list[Received] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                status = owner.status
                if 200 <= status < 300:
                    with owner._cond:
                        owner.got.append(Received(
                            {k.lower(): v for k, v in self.headers.items()}, body))
                        owner._cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, n: int, timeout: float = 20) -> list[Received]:
        """Until at least ``n`` messages came (or ``timeout``); what came."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.got) >= n, timeout)
            return list(self.got)

    def of_type(self, type_: str) -> list[Received]:
        with self._cond:
            return [r for r in self.got if r.json.get("type") == type_]
