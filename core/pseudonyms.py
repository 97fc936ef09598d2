"""Keyed pseudonyms: how the audit log names a patient's number without holding it.

An access to patient data is audited naming the numbers it showed, so that the access report
can answer "who looked at this patient" (HIPAA's accounting of disclosures). The log holds no
number in clear (its entries reach exports, screens and auditors): it holds
``HMAC-SHA256(secret, "phone:" || E.164)``, cut to 128 bits (32 hex characters). Without the
secret a pseudonym cannot be turned back into a number, nor a number into its pseudonym (a
plain hash of a phone number could: there are only ~10^10 of them); with it, the access
report computes a number's pseudonym and finds its entries.

The secret is 32 random bytes in a file outside the database (``CALLGATE_AUDIT_PSEUDONYM_KEY_FILE``,
default ``callgate-audit-pseudonym.key`` beside the signing key), created mode 0600 at first
use. It is a separate secret from the signing key, so that the key can be rotated (a new
key signs new checkpoints) without losing the access history. Every instance of one
deployment must use the same file (copy it with the signing key).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

PSEUDONYM_CHARS = 32
_KEY_BYTES = 32


class PseudonymKeyError(Exception):
    """The pseudonym key file cannot be used (unreadable, malformed, readable by others)."""


class Pseudonyms:
    """Pseudonyms under one secret."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise PseudonymKeyError("a pseudonym key has at least 16 bytes")
        self._key = key

    def phone(self, e164: str) -> str:
        """The pseudonym of an E.164 number (32 lower-case hex characters)."""
        mac = hmac.new(self._key, b"phone:" + e164.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:PSEUDONYM_CHARS]

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[Pseudonyms, bool]:
        """The secret at ``path`` (hex, one line), created 0600 if absent; True if created."""
        path = Path(path)
        try:
            return cls(_load(path)), False
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(_KEY_BYTES)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        _write_new(tmp, (key.hex() + "\n").encode("ascii"))
        try:
            os.link(tmp, path)  # never replaces a file: another process's key wins
        except FileExistsError:
            return cls(_load(path)), False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cls(key), True


def _load(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    st = os.fstat(fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(st.st_mode):
            raise PseudonymKeyError(f"pseudonym key {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise PseudonymKeyError(
                f"pseudonym key {path} has mode {mode:04o}: make it readable by its owner "
                f"only (chmod 600 {path})")
        text = f.read(1024).decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise PseudonymKeyError(f"pseudonym key {path} is not hex") from None
    if len(key) < 16:
        raise PseudonymKeyError(f"pseudonym key {path} is shorter than 16 bytes")
    return key


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
