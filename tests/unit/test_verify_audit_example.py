"""examples/verify_audit.py against a stand-in server that speaks API.md's audit endpoints.

The server is a stdlib ``http.server`` over a synthetic log built with core.merkle and signed
with core.signednote; the auditor runs as a separate process, as an auditor would run it. Its
own verifiers are also checked against core.merkle's (it may not import them).
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import merkle
from core.signednote import checkpoint_text, public_key_bytes, sign_note, vkey

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "verify_audit.py"
API_KEY = "cg_test_compliance"
ORIGIN = "callgate.test/audit"
KEY_NAME = "callgate.test/audit"
LEAF_FIELDS = ("index", "at", "actor", "kind", "subject", "payload", "policy_version")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content(j: int) -> dict[str, Any]:
    """The synthetic event j (everything but its index)."""
    return {
        "at": f"2026-11-24T17:{j // 60:02d}:{j % 60:02d}.000000+00:00",
        "actor": "key:acme-dialer-1" if j % 3 else "system",
        "kind": ("call.leased", "call.refused", "consent.revoked")[j % 3],
        "subject": f"call-{j:04d}",
        "payload": {"attempt": j % 4, "reason": "DAILY_CAP", "note": "réessai"},
        "policy_version": "2026.11",
    }


@dataclass
class Log:
    """What the server serves: entries, stored subtrees, signed checkpoints, the vkey."""

    entries: list[dict[str, Any]]
    nodes: dict[tuple[int, int], bytes]
    notes: dict[int, str]
    latest: int
    vkey: str
    public_key: bytes
    key_form: str = "json-string"
    # Lies the server may tell: entry index -> field overrides; lie about leaf hashes.
    altered_fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    lie_leaf_hash: bool = False

    def get(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


def build_log(originals: list[int], key: Ed25519PrivateKey, checkpoint_sizes: list[int]) -> Log:
    entries = []
    for index, j in enumerate(originals):
        fields = {"index": index, **content(j)}
        entries.append({**fields, "leaf": canonical(fields)})
    nodes: dict[tuple[int, int], bytes] = {}
    hashes = [merkle.leaf_hash(e["leaf"].encode("utf-8")) for e in entries]
    for level, index, h in merkle.append(0, hashes, lambda lv, i: nodes[(lv, i)]):
        nodes[(level, index)] = h
    notes = {}
    for size in checkpoint_sizes:
        root = merkle.root(size, lambda lv, i: nodes[(lv, i)])
        notes[size] = sign_note(checkpoint_text(ORIGIN, size, root), KEY_NAME, key)
    return Log(
        entries,
        nodes,
        notes,
        max(checkpoint_sizes),
        vkey(KEY_NAME, key),
        public_key_bytes(key),
    )


class Handler(BaseHTTPRequestHandler):
    server: AuditServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": {"code": code, "message": message, "details": None}})

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._error(401, "UNAUTHORIZED", "missing or unknown API key")
        log = self.server.log
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/v1/audit/key":
            if log.key_form == "text":
                return self._send(200, log.vkey.encode() + b"\n", "text/plain")
            if log.key_form == "object":
                return self._send(200, {"vkey": log.vkey})
            return self._send(200, log.vkey)
        if path == "/v1/audit/checkpoint":
            size = int(q.get("size", log.latest))
            if size not in log.notes:
                return self._error(404, "NOT_FOUND", "no checkpoint at that size")
            root = merkle.root(size, log.get)
            return self._send(
                200,
                {
                    "size": size,
                    "root_hash": root.hex(),
                    "at": "2026-11-24T18:00:00+00:00",
                    "origin": ORIGIN,
                    "key_name": KEY_NAME,
                    "public_key": base64.b64encode(log.public_key).decode(),
                    "note": log.notes[size],
                },
            )
        if path.startswith("/v1/audit/entries/"):
            index = int(path.rsplit("/", 1)[1])
            if not 0 <= index < len(log.entries):
                return self._error(404, "NOT_FOUND", "no such entry")
            return self._send(200, {**log.entries[index], **log.altered_fields.get(index, {})})
        if path == "/v1/audit/proof/inclusion":
            index, size = int(q["index"]), int(q["size"])
            if not 0 <= index < size <= log.latest:
                return self._error(422, "VALIDATION_ERROR", "need 0 <= index < size <= latest")
            leaf = log.entries[index]["leaf"]
            if log.lie_leaf_hash and index in log.altered_fields:
                leaf = log.altered_fields[index].get("leaf", leaf)
            return self._send(
                200,
                {
                    "index": index,
                    "size": size,
                    "leaf_hash": merkle.leaf_hash(leaf.encode()).hex(),
                    "hashes": [h.hex() for h in merkle.inclusion_proof(index, size, log.get)],
                },
            )
        if path == "/v1/audit/proof/consistency":
            m, n = int(q["from"]), int(q["to"])
            if not 1 <= m <= n <= log.latest:
                return self._error(422, "VALIDATION_ERROR", "need 1 <= from <= to <= latest")
            hashes = merkle.consistency_proof(m, n, log.get)
            return self._send(200, {"from": m, "to": n, "hashes": [h.hex() for h in hashes]})
        return self._error(404, "NOT_FOUND", "no such path")


class AuditServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, log: Log) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def original(key: Ed25519PrivateKey) -> Log:
    return build_log(list(range(100)), key, [0, 40, 60, 64, 100])


@pytest.fixture
def server(original: Log) -> Iterator[AuditServer]:
    srv = AuditServer(original)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def run(server: AuditServer, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", server.url, "--api-key", API_KEY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"},
    )


def saved(tmp_path: Path, log: Log, size: int) -> Path:
    path = tmp_path / f"cp-{size}.note"
    path.write_text(log.notes[size], encoding="utf-8")
    return path


# --- a log that holds -------------------------------------------------------------------------


def test_good_log_checkpoint_entries_consistency_and_save(
    server: AuditServer, original: Log, tmp_path: Path
) -> None:
    out = tmp_path / "latest.note"
    r = run(
        server,
        "--vkey", original.vkey,
        "--origin", ORIGIN,
        "--entry", "0", "--entry", "42", "--entry", "99",
        "--since", str(saved(tmp_path, original, 60)),
        "--save", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checkpoint callgate.test/audit size 100" in r.stdout
    assert "entry 42 (call.leased) is in the tree of size 100" in r.stdout
    assert "extends the saved one of size 60" in r.stdout
    assert r.stdout.rstrip().endswith("OK")
    assert "WARNING" not in r.stderr
    assert out.read_text(encoding="utf-8") == original.notes[100]


@pytest.mark.parametrize("since", [0, 40, 64, 100])
def test_consistency_from_every_saved_size(
    server: AuditServer, original: Log, tmp_path: Path, since: int
) -> None:
    vkey_file = tmp_path / "callgate.vkey"
    vkey_file.write_text(original.vkey + "\n", encoding="utf-8")
    r = run(
        server,
        "--vkey-file", str(vkey_file),
        "--since", str(saved(tmp_path, original, since)),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"extends the saved one of size {since}" in r.stdout


def test_an_older_checkpoint_by_size(server: AuditServer, original: Log, tmp_path: Path) -> None:
    r = run(
        server,
        "--vkey", original.vkey,
        "--size", "60",
        "--entry", "59",
        "--since", str(saved(tmp_path, original, 40)),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "size 60" in r.stdout


@pytest.mark.parametrize("form", ["json-string", "object", "text"])
def test_without_a_pinned_key_it_warns(
    server: AuditServer, original: Log, tmp_path: Path, form: str
) -> None:
    server.log = Log(**{**original.__dict__, "key_form": form})
    r = run(server, "--entry", "7", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING: no key pinned" in r.stderr
    assert original.vkey.split("+")[1] in r.stderr


# --- logs that do not hold --------------------------------------------------------------------


def rewritten(key: Ed25519PrivateKey, drop: int, sizes: list[int], extra: int = 0) -> Log:
    """The log with entry ``drop`` deleted, later ones renumbered, every hash recomputed."""
    originals = [j for j in range(100 + extra) if j != drop]
    return build_log(originals, key, sizes)


def test_rewritten_log_signed_with_another_key(
    server: AuditServer, original: Log, tmp_path: Path
) -> None:
    server.log = rewritten(Ed25519PrivateKey.generate(), 30, [40, 60, 99])
    r = run(
        server,
        "--vkey", original.vkey,
        "--entry", "30",
        "--since", str(saved(tmp_path, original, 60)),
        "--save", str(tmp_path / "new.note"),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not signed by the pinned key" in r.stderr
    assert original.vkey.split("+")[1] in r.stderr
    assert not (tmp_path / "new.note").exists()


def test_rewritten_log_resigned_with_the_operators_key(
    server: AuditServer, key: Ed25519PrivateKey, original: Log, tmp_path: Path
) -> None:
    """Whoever holds the key can re-sign a rewrite; the saved checkpoint still catches it."""
    server.log = rewritten(key, 30, [40, 60, 99])
    r = run(
        server,
        "--vkey", original.vkey,
        "--entry", "30",
        "--since", str(saved(tmp_path, original, 60)),
        "--save", str(tmp_path / "new.note"),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "log was rewritten" in r.stderr
    assert "below index 60" in r.stderr
    assert "not saving" in r.stderr
    assert not (tmp_path / "new.note").exists()


def test_fork_at_the_same_size(
    server: AuditServer, key: Ed25519PrivateKey, original: Log, tmp_path: Path
) -> None:
    server.log = rewritten(key, 30, [100], extra=1)
    r = run(
        server, "--vkey", original.vkey, "--since", str(saved(tmp_path, original, 100)),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1
    assert "fork: two different roots are signed for size 100" in r.stderr


def test_shrunk_log(
    server: AuditServer, key: Ed25519PrivateKey, original: Log, tmp_path: Path
) -> None:
    server.log = build_log(list(range(60)), key, [60])
    r = run(
        server, "--vkey", original.vkey, "--since", str(saved(tmp_path, original, 100)),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1
    assert "the log shrank" in r.stderr


def test_served_fields_differ_from_the_hashed_leaf(
    server: AuditServer, original: Log, tmp_path: Path
) -> None:
    server.log = Log(**{**original.__dict__, "altered_fields": {7: {"subject": "call-9999"}}})
    r = run(server, "--vkey", original.vkey, "--entry", "7", "--entry", "8", cwd=tmp_path)
    assert r.returncode == 1
    assert "entry 7: its fields differ from its hashed leaf" in r.stderr
    assert "entry 8 (consent.revoked) is in the tree" in r.stdout


def test_entry_rewritten_in_place(server: AuditServer, original: Log, tmp_path: Path) -> None:
    fields = {**{k: original.entries[7][k] for k in LEAF_FIELDS}, "kind": "call.completed"}
    forged = {**fields, "leaf": canonical(fields)}
    # The server still proves the old leaf: its leaf hash gives the rewrite away.
    server.log = Log(**{**original.__dict__, "altered_fields": {7: forged}})
    r = run(server, "--vkey", original.vkey, "--entry", "7", cwd=tmp_path)
    assert r.returncode == 1
    assert "entry 7: the server's leaf hash is not the hash of the entry's leaf" in r.stderr
    # The server lies about the leaf hash too: the proof no longer reaches the signed root.
    server.log = Log(**{**original.__dict__, "altered_fields": {7: forged}, "lie_leaf_hash": True})
    r = run(server, "--vkey", original.vkey, "--entry", "7", cwd=tmp_path)
    assert r.returncode == 1
    assert "entry 7: not in the signed tree of size 100" in r.stderr


def test_non_canonical_leaf(server: AuditServer, original: Log, tmp_path: Path) -> None:
    fields = {k: original.entries[3][k] for k in LEAF_FIELDS}
    spaced = json.dumps(fields, sort_keys=True)
    server.log = Log(**{**original.__dict__, "altered_fields": {3: {"leaf": spaced}}})
    r = run(server, "--vkey", original.vkey, "--entry", "3", cwd=tmp_path)
    assert r.returncode == 1
    assert "entry 3: its leaf is not canonical JSON" in r.stderr


def test_missing_entry_and_bad_key(server: AuditServer, original: Log, tmp_path: Path) -> None:
    r = run(server, "--vkey", original.vkey, "--entry", "100", cwd=tmp_path)
    assert r.returncode == 1
    assert "HTTP 404" in r.stderr
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", server.url, "--api-key", "wrong",
         "--vkey", original.vkey],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1
    assert "HTTP 401 UNAUTHORIZED" in r.stderr


def test_tampered_saved_note(server: AuditServer, original: Log, tmp_path: Path) -> None:
    path = saved(tmp_path, original, 60)
    path.write_text(original.notes[60].replace("\n60\n", "\n61\n"), encoding="utf-8")
    r = run(server, "--vkey", original.vkey, "--since", str(path), cwd=tmp_path)
    assert r.returncode == 1
    assert f"saved checkpoint {path}" in r.stderr
    assert "does not verify" in r.stderr


# --- the script stands alone, and its verifiers agree with core.merkle ------------------------


def test_script_imports_only_stdlib_and_cryptography() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            roots.add((node.module or "").split(".")[0])
    outside = {r for r in roots if r not in sys.stdlib_module_names and r != "__future__"}
    assert outside == {"cryptography"}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_audit_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def test_script_verifiers_agree_with_core(script: ModuleType) -> None:
    nodes: dict[tuple[int, int], bytes] = {}
    hashes = [merkle.leaf_hash(b"%d" % i) for i in range(40)]
    for level, index, h in merkle.append(0, hashes, lambda lv, i: nodes[(lv, i)]):
        nodes[(level, index)] = h

    def get(lv: int, i: int) -> bytes:
        return nodes[(lv, i)]

    roots = [merkle.root(n, get) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            proof = merkle.inclusion_proof(i, n, get)
            assert script.root_from_inclusion(hashes[i], i, n, proof) == roots[n]
            assert script.root_from_inclusion(hashes[i], i, n, proof[:-1] or [roots[n]]) != roots[n]
        for m in range(1, n):
            proof = merkle.consistency_proof(m, n, get)
            assert script.verify_consistency(m, n, roots[m], roots[n], proof)
            assert not script.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
            assert not script.verify_consistency(m, n, roots[n], roots[m], proof)


def test_script_reads_the_go_vector(script: ModuleType) -> None:
    verifier = script.parse_vkey(
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    note = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n\n"
        "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501
    )
    assert script.open_note(note, verifier).startswith("If you think")
    assert script.verifier_text(verifier) == vkey("PeterNeumann", verifier.public_key)
