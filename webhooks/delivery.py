"""Sending one webhook: signed per Standard Webhooks (the ``standardwebhooks`` library signs;
nothing here computes an HMAC), to a checked address only.

Headers ``webhook-id`` (the event's id, the same on every retry and replay, so that a
receiver can drop a repeat), ``webhook-timestamp`` (seconds, when sent) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 over id.timestamp.body>`` keyed by the
decoded ``whsec_`` secret). No redirect is followed; the answer's body is not read beyond
a few bytes.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import typing
from dataclasses import dataclass
from datetime import datetime

import certifi
import httpcore
from standardwebhooks.webhooks import Webhook

from webhooks.ssrf import UrlRefused, check_url, resolve

SECRET_PREFIX = "whsec_"
USER_AGENT = "callgate-webhooks/1"


def new_secret() -> str:
    """``whsec_`` and 32 random bytes in base64 (what Standard Webhooks receivers expect)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, msg_id: str, at: datetime, body: str) -> str:
    return Webhook(secret).sign(msg_id, at, body)


class _CheckedBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, but the host is resolved here, every address checked
    (webhooks.ssrf), and the connection made to a checked address: what was checked is
    what is connected to (no second resolution in between to rebind). TLS still verifies
    the certificate against the host name (httpcore passes it for SNI)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port, self._allow_private)
        last: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address,
                                               socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last = exc
        raise httpcore.ConnectError(f"no address of the host answered ({type(last).__name__})")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook receivers")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Result:
    status: int | None  # the HTTP status, None when no answer came
    error: str | None  # why it failed (no address, no secret): short, for the log

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def receiver_down(self) -> bool:
        """No answer, or the receiver says it is unavailable: back off the whole
        subscription, not only this message."""
        return self.status is None or self.status in (429, 502, 503, 504)


class Sender:
    """One connection pool for the process's deliveries (keep-alive to each receiver)."""

    def __init__(self, allow_private: bool, timeout: float) -> None:
        self._allow_private = allow_private
        self._timeout = timeout
        context = ssl.create_default_context(cafile=certifi.where())
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, max_connections=32, retries=0,
            network_backend=_CheckedBackend(allow_private),
        )

    def send(self, url: str, secret: str, msg_id: str, body: str, at: datetime) -> Result:
        try:
            check_url(url, self._allow_private)
        except UrlRefused as exc:
            return Result(None, str(exc))
        data = body.encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"user-agent", USER_AGENT.encode()),
            (b"webhook-id", msg_id.encode()),
            (b"webhook-timestamp", str(int(at.timestamp())).encode()),
            (b"webhook-signature", sign(secret, msg_id, at, body).encode()),
        ]
        t = self._timeout
        try:
            with self._pool.stream(
                "POST", url, headers=headers, content=data,
                extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}},
            ) as response:
                for _chunk in response.iter_stream():
                    break  # the status is the answer; a few bytes read, the rest dropped
                return Result(response.status, None if 200 <= response.status < 300
                              else f"HTTP {response.status}")
        except UrlRefused as exc:
            return Result(None, str(exc))
        except (TimeoutError, httpcore.TimeoutException):
            return Result(None, "timed out")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                OSError, ssl.SSLError) as exc:
            return Result(None, f"no answer ({type(exc).__name__})")

    def close(self) -> None:
        self._pool.close()
