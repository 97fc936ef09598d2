"""The demo's HTTP side: the real app served from a thread, and one role's client."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from core.runtime import Runtime

# --- the HTTP server in a thread -----------------------------------------------------------


class DemoServer:
    """uvicorn serving ``create_app(runtime)`` from a background thread, on a socket bound
    before start (no port race)."""

    def __init__(self, runtime: Runtime) -> None:
        import uvicorn

        from api.app import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        app = create_app(runtime, migrate=False, scheduler=False)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                log_config=None, access_log=False, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="callgate-demo-http",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class Api:
    """One role's HTTP client (keep-alive)."""

    def __init__(self, base: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60.0
        )

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.client.post(path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def close(self) -> None:
        self.client.close()


def expect(resp: httpx.Response, *statuses: int) -> Any:
    if resp.status_code not in statuses:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url.path} answered {resp.status_code}: "
            f"{resp.text[:300]}"
        )
    return resp.json()
