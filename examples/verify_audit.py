#!/usr/bin/env python3
"""Audit a callgate audit log from the outside: signatures, inclusion, consistency.

A callgate server keeps its audit log as an RFC 9162 Merkle tree and signs its root in
C2SP checkpoints (``docs``: API.md, "Audit log: a verifiable log"). This script checks what
the server serves with nothing of callgate's: only the Python standard library and the
``cryptography`` package, and algorithms anyone can re-implement from RFC 9162 and
c2sp.org/signed-note. What it proves rests on the verifier key you pin, which the operator
publishes out of band (``GET /v1/audit/key`` prints it; keep your copy elsewhere)::

    export CALLGATE_URL=https://callgate.example.org CALLGATE_KEY=cg_...   # compliance key
    VKEY='callgate.example.org/audit+1a2b3c4d+AQ...'

    # 1. the latest checkpoint is signed by the pinned key; keep it
    python examples/verify_audit.py --vkey "$VKEY" --save cp-2026-11-24.note
    # 2. later: the log still extends what was saved (nothing rewritten, deleted, reordered)
    python examples/verify_audit.py --vkey "$VKEY" --since cp-2026-11-24.note --save cp-new.note
    # 3. entry 1234 is in the signed tree, and its fields are exactly what was hashed
    python examples/verify_audit.py --vkey "$VKEY" --entry 1234

Exit status: 0 when every check holds, 1 when one fails (the message names the entry index or
the sizes involved), 2 for bad arguments. Without ``--vkey`` the key the server itself serves
is used, with a warning: that checks the log against itself, not against its operator.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LEAF_FIELDS = ("index", "at", "actor", "kind", "subject", "payload", "policy_version")
EMPTY_ROOT = hashlib.sha256(b"").digest()
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space start every signature line


class AuditFailure(Exception):
    """The log, or the server's answer about it, does not hold up."""


# --- RFC 9162 §2.1: the Merkle tree ---------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 steps 1-4: the root the proof implies, or None if it cannot fit."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 for 0 < m < n (the caller handles m == 0 and m == n)."""
    if not 0 < m < n or not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m a power of two: the old root is the proof's first node
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n


# --- c2sp.org/signed-note and c2sp.org/tlog-checkpoint --------------------------------------


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: bytes

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    note: str


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise AuditFailure(f"{what} is not standard base64") from e


def _valid_name(name: str) -> bool:
    return bool(name) and not any(ch == "+" or ch.isspace() or ord(ch) < 0x20 for ch in name)


def parse_vkey(text: str) -> Verifier:
    """``<name>+<8 hex key id>+<base64(0x01 ‖ 32-byte Ed25519 key)>``; the id must match."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, key64 = rest.partition("+")
    if not _valid_name(name) or not re.fullmatch(r"[0-9a-fA-F]{8}", hex_id):
        raise AuditFailure(f"not a verifier key: {text!r}")
    key = _b64decode(key64, "the verifier key")
    if len(key) != 33 or key[0] != 0x01:
        raise AuditFailure(f"verifier key {name} is not an Ed25519 key")
    kid = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if kid.hex() != hex_id.lower():
        raise AuditFailure(f"verifier key {name}: key id {hex_id} does not match the key")
    return Verifier(name, kid, key[1:])


def open_note(note: str, verifier: Verifier) -> str:
    """The note's text once the verifier's signature on it holds (others are ignored)."""
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
        raise AuditFailure("the note contains control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise AuditFailure("the note has no signature block")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    seen = []
    ok = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise AuditFailure(f"malformed signature line {line!r}")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64decode(b64, f"the signature by {name}")
        if len(raw) < 5:
            raise AuditFailure(f"the signature by {name} is too short")
        seen.append(f"{name}+{raw[:4].hex()}")
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue  # c2sp.org/signed-note: ignore signatures by other keys
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(
                raw[4:], text.encode("utf-8")
            )
        except InvalidSignature:
            raise AuditFailure(
                f"the signature by {verifier.label} does not verify: the note was altered"
            ) from None
        ok = True
    if not ok:
        raise AuditFailure(
            f"not signed by the pinned key {verifier.label} "
            f"(signed by: {', '.join(seen) or 'nobody'})"
        )
    return text


def parse_checkpoint(text: str, note: str) -> Checkpoint:
    """``<origin>\\n<size>\\n<base64 root>\\n`` and optional extension lines."""
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise AuditFailure("the checkpoint text has fewer than three lines, or an empty one")
    origin, size, root64 = lines[:3]
    if not re.fullmatch(r"0|[1-9][0-9]*", size):
        raise AuditFailure(f"checkpoint size {size!r} is not a decimal number")
    root = _b64decode(root64, "the checkpoint root hash")
    if len(root) != 32:
        raise AuditFailure("the checkpoint root hash is not 32 bytes")
    return Checkpoint(origin, int(size), root, note)


# --- the server -------------------------------------------------------------------------------


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def get(self, path: str, **params: int) -> Any:
        body = self.get_bytes(path, **params)
        try:
            return json.loads(body)
        except ValueError:
            raise AuditFailure(f"GET {path}: the answer is not JSON") from None

    def get_bytes(self, path: str, **params: int) -> bytes:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(
            url,
            headers={"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as e:
            detail = ""
            try:
                error = json.loads(e.read())["error"]
                detail = f" {error['code']}: {error['message']}"
            except Exception:
                pass
            raise AuditFailure(f"GET {path}: HTTP {e.code}{detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise AuditFailure(f"GET {url}: cannot reach the server ({e})") from None
        return body


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise AuditFailure(f"{what}: 'hashes' is not a list")
    out = []
    for v in values:
        try:
            h = bytes.fromhex(v)
        except (TypeError, ValueError):
            raise AuditFailure(f"{what}: {v!r} is not a hex hash") from None
        if len(h) != 32:
            raise AuditFailure(f"{what}: a hash is not 32 bytes")
        out.append(h)
    return out


# --- the checks -------------------------------------------------------------------------------


def check_checkpoint(client: Client, verifier: Verifier, size: int | None) -> Checkpoint:
    """The checkpoint's note is signed by the pinned key, and its JSON agrees with the note."""
    served = client.get("/v1/audit/checkpoint", **({} if size is None else {"size": size}))
    note = served.get("note") if isinstance(served, dict) else None
    if not isinstance(note, str):
        raise AuditFailure("GET /v1/audit/checkpoint: no 'note' in the answer")
    try:
        text = open_note(note, verifier)
    except AuditFailure as e:
        raise AuditFailure(f"checkpoint: {e}") from None
    cp = parse_checkpoint(text, note)
    if size is not None and cp.size != size:
        raise AuditFailure(f"checkpoint: asked for size {size}, the note signs size {cp.size}")
    mismatched = [
        field
        for field, want in (
            ("size", cp.size),
            ("root_hash", cp.root_hash.hex()),
            ("origin", cp.origin),
        )
        if field in served and served[field] != want
    ]
    if mismatched:
        raise AuditFailure(
            f"checkpoint: the answer's {', '.join(mismatched)} disagree with its signed note"
        )
    print(
        f"ok   checkpoint {cp.origin} size {cp.size} root {cp.root_hash.hex()} "
        f"signed by {verifier.label}"
    )
    return cp


def canonical_leaf(entry: dict[str, Any]) -> str:
    fields = {k: entry[k] for k in LEAF_FIELDS}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_entry(client: Client, index: int, cp: Checkpoint) -> None:
    """Entry ``index`` is what was hashed, and its leaf is in the checkpoint's tree."""
    entry = client.get(f"/v1/audit/entries/{index}")
    if not isinstance(entry, dict) or not isinstance(entry.get("leaf"), str):
        raise AuditFailure(f"entry {index}: the answer has no 'leaf' string")
    missing = [k for k in LEAF_FIELDS if k not in entry]
    if missing:
        raise AuditFailure(f"entry {index}: the answer lacks {', '.join(missing)}")
    if entry["index"] != index or isinstance(entry["index"], bool):
        raise AuditFailure(f"entry {index}: the server answered with entry {entry['index']!r}")
    leaf = entry["leaf"]
    if leaf != canonical_leaf(entry):
        try:
            same = json.loads(leaf) == {k: entry[k] for k in LEAF_FIELDS}
        except ValueError:
            same = False
        if same:
            raise AuditFailure(f"entry {index}: its leaf is not canonical JSON")
        raise AuditFailure(
            f"entry {index}: its fields differ from its hashed leaf (the served fields were "
            "altered, or the leaf was)"
        )
    lh = leaf_hash(leaf.encode("utf-8"))
    if index >= cp.size:
        raise AuditFailure(
            f"entry {index}: not yet in the checkpoint (size {cp.size}); try again shortly"
        )
    answer = client.get("/v1/audit/proof/inclusion", index=index, size=cp.size)
    what = f"inclusion proof of entry {index} in size {cp.size}"
    if not isinstance(answer, dict):
        raise AuditFailure(f"{what}: not an object")
    if answer.get("index") != index or answer.get("size") != cp.size:
        raise AuditFailure(f"{what}: the server answered for another index or size")
    if answer.get("leaf_hash") != lh.hex():
        raise AuditFailure(
            f"entry {index}: the server's leaf hash is not the hash of the entry's leaf"
        )
    root = root_from_inclusion(lh, index, cp.size, _hashes(answer.get("hashes"), what))
    if root != cp.root_hash:
        raise AuditFailure(
            f"entry {index}: not in the signed tree of size {cp.size} (its inclusion proof "
            "does not lead to the checkpoint's root)"
        )
    print(f"ok   entry {index} ({entry['kind']}) is in the tree of size {cp.size}")


def check_since(client: Client, saved: Path, verifier: Verifier, cp: Checkpoint) -> None:
    """The log at the saved checkpoint's size is a prefix of the log now (RFC 9162 §2.1.4)."""
    try:
        note = saved.read_text(encoding="utf-8")
    except OSError as e:
        raise AuditFailure(f"cannot read the saved checkpoint {saved}: {e}") from None
    try:
        old = parse_checkpoint(open_note(note, verifier), note)
    except AuditFailure as e:
        raise AuditFailure(f"saved checkpoint {saved}: {e}") from None
    m, n = old.size, cp.size
    if old.origin != cp.origin:
        raise AuditFailure(f"saved checkpoint {saved} is of log {old.origin!r}, not {cp.origin!r}")
    if m > n:
        raise AuditFailure(
            f"the log shrank: {saved} signs size {m}, the server's checkpoint size {n} "
            "(entries were removed, or the log was rolled back)"
        )
    if m == n:
        if old.root_hash != cp.root_hash:
            raise AuditFailure(
                f"fork: two different roots are signed for size {m} ({saved} and the server's): "
                "the log was rewritten"
            )
    elif m == 0:
        if old.root_hash != EMPTY_ROOT:
            raise AuditFailure(f"saved checkpoint {saved}: size 0 with a non-empty root")
    else:
        answer = client.get("/v1/audit/proof/consistency", **{"from": m, "to": n})
        what = f"consistency proof from {m} to {n}"
        if not isinstance(answer, dict) or answer.get("from") != m or answer.get("to") != n:
            raise AuditFailure(f"{what}: the server answered for other sizes")
        if not verify_consistency(
            m, n, old.root_hash, cp.root_hash, _hashes(answer.get("hashes"), what)
        ):
            raise AuditFailure(
                f"the log was rewritten: the first {m} entries (indices 0-{m - 1}) signed in "
                f"{saved} are not a prefix of the log of size {n} (an entry below index {m} "
                "was changed, removed or reordered)"
            )
    print(f"ok   the log of size {n} extends the saved one of size {m} ({saved})")


def served_key(client: Client) -> str | None:
    """What ``GET /v1/audit/key`` serves: a JSON string, ``{"vkey": ...}`` or plain text."""
    body = client.get_bytes("/v1/audit/key")
    try:
        value: Any = json.loads(body)
    except ValueError:
        value = body.decode("utf-8", "replace")
    if isinstance(value, dict):
        value = value.get("vkey")
    return value.strip() if isinstance(value, str) else None


def save_note(path: Path, note: str) -> None:
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("CALLGATE_URL", "http://127.0.0.1:8000"))
    p.add_argument(
        "--api-key",
        default=os.environ.get("CALLGATE_KEY"),
        help="an admin or compliance key (default: $CALLGATE_KEY)",
    )
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--vkey", help="the log's verifier key, pinned: <name>+<id>+<key>")
    pin.add_argument("--vkey-file", type=Path, help="a file holding the verifier key")
    p.add_argument("--origin", help="insist on this checkpoint origin")
    p.add_argument(
        "--size", type=int, help="check the checkpoint made at this size, not the latest"
    )
    p.add_argument(
        "--entry",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="prove this entry is in the checkpoint (repeatable)",
    )
    p.add_argument(
        "--since",
        type=Path,
        metavar="NOTE_FILE",
        help="a checkpoint note saved earlier: prove the log still extends it",
    )
    p.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="save the checked checkpoint note here when every check holds",
    )
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    if not args.api_key:
        p.error("an API key is needed: --api-key or CALLGATE_KEY")

    client = Client(args.url, args.api_key, args.timeout)
    failures: list[str] = []
    try:
        served_vkey = served_key(client)
        if args.vkey or args.vkey_file:
            pinned_text = args.vkey or args.vkey_file.read_text(encoding="utf-8").strip()
            verifier = parse_vkey(pinned_text)
            if served_vkey is not None and served_vkey != verifier_text(verifier):
                print(
                    f"note: the server serves the key {served_vkey!r}, not the pinned "
                    f"{verifier.label}: only the pinned key is trusted",
                    file=sys.stderr,
                )
        else:
            if served_vkey is None:
                raise AuditFailure("GET /v1/audit/key: no verifier key in the answer")
            verifier = parse_vkey(served_vkey)
            print(
                "WARNING: no key pinned (--vkey): trusting the key the server itself serves, "
                f"{verifier.label}.\nWARNING: this checks the log against itself only; an "
                "operator who rewrote it could have re-signed it. Pin the key published out of "
                "band.",
                file=sys.stderr,
            )
        cp = check_checkpoint(client, verifier, args.size)
        if args.origin is not None and cp.origin != args.origin:
            raise AuditFailure(f"checkpoint origin is {cp.origin!r}, expected {args.origin!r}")
    except (AuditFailure, OSError) as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1

    for index in args.entry:
        try:
            check_entry(client, index, cp)
        except AuditFailure as e:
            failures.append(str(e))
            print(f"FAIL {e}", file=sys.stderr)
    if args.since is not None:
        try:
            check_since(client, args.since, verifier, cp)
        except AuditFailure as e:
            failures.append(str(e))
            print(f"FAIL {e}", file=sys.stderr)

    if failures:
        if args.save is not None:
            print(f"not saving {args.save}: a check failed", file=sys.stderr)
        print(f"FAILED: {len(failures)} check(s) did not hold", file=sys.stderr)
        return 1
    if args.save is not None:
        try:
            save_note(args.save, cp.note)
        except OSError as e:
            print(f"FAIL cannot save {args.save}: {e}", file=sys.stderr)
            return 1
        print(f"saved the checkpoint of size {cp.size} to {args.save}")
    print("OK")
    return 0


def verifier_text(v: Verifier) -> str:
    key64 = base64.b64encode(bytes([0x01]) + v.public_key).decode("ascii")
    return f"{v.label}+{key64}"


if __name__ == "__main__":
    sys.exit(main())
