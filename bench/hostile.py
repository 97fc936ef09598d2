"""The hostile tester's memory and time cases (issue 16, points 1 and 2), against a real
``callgate serve`` process: peak RSS (``VmHWM`` in /proc/PID/status) before and after each
request, the time to the answer, and how long ``/healthz`` waited meanwhile.

    python -m bench.hostile [--source DIR]   # DIR: another checkout to measure (e.g. main)

Each case runs against a fresh server (so one case's peak does not hide the next's), with an
SQLite database in a temporary directory. Prints one line per case.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024  # MiB
    return -1


def _cpu(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _request(port: int, method: str, path: str, body: bytes, headers: dict[str, str],
             timeout: float = 300) -> tuple[int, bytes]:
    """A raw HTTP/1.1 request; the body is sent in pieces and sending stops quietly if the
    server answers (and closes) early."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    try:
        sock.sendall(head.encode())
        view = memoryview(body)
        for i in range(0, len(body), 256 * 1024):
            sock.sendall(view[i:i + 256 * 1024])
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                break
            data += got
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


class Served:
    def __init__(self, source: str | None) -> None:
        self.dir = tempfile.mkdtemp(prefix="cg-hostile-")
        self.url = f"sqlite:///{self.dir}/cg.db"
        self.port = _free_port()
        env = {**os.environ, "CALLGATE_DATABASE_URL": self.url, "CALLGATE_LOG_LEVEL": "WARNING"}
        prefix = f"import sys; sys.path.insert(0, {source!r}); " if source else ""
        self.run = [sys.executable, "-c", prefix + "from cli.main import main; main()"]
        self.env = env
        self.proc = subprocess.Popen(
            [*self.run, "serve", "--port", str(self.port)], env=env, cwd=self.dir,
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/server.log", "wb"),
        )
        for _ in range(300):
            try:
                if _request(self.port, "GET", "/healthz", b"", {}, 2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)

    def key(self, role: str) -> str:
        out = subprocess.run([*self.run, "keys", "create", "--role", role, "--name",
                              f"{role}-{time.time_ns()}"], env=self.env, cwd=self.dir,
                             capture_output=True, text=True, check=True).stdout
        return next(w for w in out.split() if len(w) > 30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _case(source: str | None, name: str, setup, method: str, path: str, body: bytes,
          role: str | None, ctype: str = "application/json") -> dict[str, object]:
    srv = Served(source)
    try:
        headers = {"Content-Type": ctype}
        if role:
            key = srv.key(role)
            headers["Authorization"] = f"Bearer {key}"
            path = setup(srv, key) if setup else path
        pid = srv.proc.pid
        for _ in range(3):  # warm up
            _request(srv.port, "GET", "/healthz", b"", {})
        rss0, hwm0, cpu0 = _status(pid, "VmRSS"), _status(pid, "VmHWM"), _cpu(pid)
        health: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                t = time.perf_counter()
                try:
                    _request(srv.port, "GET", "/healthz", b"", {}, 60)
                except OSError:
                    pass
                health.append(time.perf_counter() - t)
                time.sleep(0.05)

        th = threading.Thread(target=probe, daemon=True)
        th.start()
        t0 = time.perf_counter()
        status, answer = _request(srv.port, method, path, body, headers)
        took = time.perf_counter() - t0
        done.set()
        th.join()
        hwm1, cpu1 = _status(pid, "VmHWM"), _cpu(pid)
        try:
            code = json.loads(answer).get("error", {}).get("code")
        except ValueError:
            code = None
        return {"case": name, "status": status, "code": code, "seconds": round(took, 2),
                "server_cpu_s": round(cpu1 - cpu0, 2), "rss_before_mib": rss0,
                "hwm_before_mib": hwm0, "hwm_after_mib": hwm1,
                "healthz_max_s": round(max(health, default=0.0), 2)}
    finally:
        srv.stop()


def _campaign(srv: Served, key: str) -> str:
    body = json.dumps({"name": "bench", "purpose": "discharge_followup",
                       "channel": "autodialed_voice", "provider_name": "Clinic",
                       "callback_number": "+1 314 555 0199"}).encode()
    status, answer = _request(srv.port, "POST", "/v1/campaigns", body,
                              {"Content-Type": "application/json",
                               "Authorization": f"Bearer {key}"})
    assert status == 201, (status, answer)
    return f"/v1/campaigns/{json.loads(answer)['id']}/calls"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", help="a checkout to import callgate from (default: installed)")
    ap.add_argument("--cases", default="lease,consents,intake_json,intake_csv")
    args = ap.parse_args()
    zeros = b"[" + b"0," * (57 * MIB // 2 - 1) + b"0]"  # 57 MiB
    cases = {
        "lease": ("57 MiB JSON, no key, POST /v1/queue/lease", None, "POST",
                  "/v1/queue/lease", zeros, None),
        "consents": ("57 MiB JSON, no key, POST /v1/consents", None, "POST",
                     "/v1/consents", zeros, None),
        "intake_json": ("15 MiB JSON array of zeros, campaign_manager, call list", _campaign,
                        "POST", "", b"[" + b"0," * (15 * MIB // 2 - 1) + b"0]",
                        "campaign_manager"),
        "intake_valid": ("100,000 valid JSON rows (no consent: refused), campaign_manager",
                         _campaign, "POST", "", json.dumps([
                             {"external_id": f"e{i}", "patient_ref": f"MRN-{i}",
                              "phone": f"+1{314 + i % 400}555{i % 10000:04d}",
                              "postal_code": "63110", "state": "MO", "priority": 5}
                             for i in range(100_000)]).encode(), "campaign_manager"),
        "intake_csv": ("CSV header + 16 million blank lines, campaign_manager, call list",
                       _campaign, "POST", "", b"external_id,phone\n" + b"\n" * 16_000_000,
                       "campaign_manager", "text/csv"),
    }
    for name in args.cases.split(","):
        title, setup, method, path, body, role = cases[name][:6]
        ctype = cases[name][6] if len(cases[name]) > 6 else "application/json"
        print(json.dumps({**_case(args.source, title, setup, method, path, body, role,
                                  ctype)}), flush=True)


if __name__ == "__main__":
    main()
