"""``callgate serve`` behind a TLS load balancer (issue 16): X-Forwarded-For and
X-Forwarded-Proto are believed only from CALLGATE_TRUSTED_PROXIES; then the dashboard's
cookies are Secure, HSTS is sent, and sign-in throttling counts the client's address."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.e2e.serverproc import Server

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def _attempts(url: str, n: int, forwarded_for: str) -> list[int]:
    """``n`` sign-in attempts with unknown keys, each with a fresh form token."""
    codes = []
    with httpx.Client(base_url=url, headers={**FORWARDED, "X-Forwarded-For": forwarded_for},
                      follow_redirects=False) as c:
        page = c.get("/ui/login")
        for i in range(n):
            m = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert m, page.text
            page = c.post("/ui/login", data={"key": f"cg_guess-{i}", "csrf": m.group(1)})
            codes.append(page.status_code)
    return codes


def test_forwarded_headers_from_a_trusted_proxy(tmp_path: Path) -> None:
    srv = Server(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", name="trusted",
                 env={"CALLGATE_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8",
                      "CALLGATE_UI_LOGIN_ATTEMPTS_PER_MINUTE": "3"}).start()
    try:
        r = httpx.get(f"{srv.url}/ui/login", headers=FORWARDED)
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert "secure" in r.headers["set-cookie"].lower()
        # Throttled per forwarded client address, not per proxy.
        assert _attempts(srv.url, 4, "203.0.113.7") == [403, 403, 403, 429]
        assert _attempts(srv.url, 1, "203.0.113.8") == [403]
        r = httpx.get(f"{srv.url}/healthz")  # plain http, no forwarded header: no HSTS
        assert "strict-transport-security" not in r.headers
    finally:
        srv.stop()


def test_forwarded_headers_from_anyone_else_are_ignored(tmp_path: Path) -> None:
    srv = Server(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", name="untrusted",
                 env={"CALLGATE_TRUSTED_PROXIES": "10.0.0.1",
                      "CALLGATE_UI_LOGIN_ATTEMPTS_PER_MINUTE": "3"}).start()
    try:
        r = httpx.get(f"{srv.url}/ui/login", headers=FORWARDED)
        assert "strict-transport-security" not in r.headers
        assert "secure" not in r.headers["set-cookie"].lower()
        # A forged X-Forwarded-For does not buy a fresh budget: the peer is counted.
        assert _attempts(srv.url, 2, "203.0.113.7") == [403, 403]
        assert _attempts(srv.url, 2, "203.0.113.8") == [403, 429]
    finally:
        srv.stop()
