"""Signed checkpoints of the audit log: C2SP signed-note and tlog-checkpoint with Ed25519.

A checkpoint commits the log operator to one tree: ``<origin>\\n<size>\\n<base64 root>\\n``
(c2sp.org/tlog-checkpoint). It travels as a signed note (c2sp.org/signed-note, the format of
Go's ``golang.org/x/mod/sumdb/note``): the text, a blank line, then one line per signature,
``— <key name> <base64(4-byte key id ‖ signature)>``, the signature being Ed25519 over the
text. Anyone holding the verifier key (``vkey``, published out of band) can check a note
without trusting the server it came from; a rewritten log would need the private key, which
lives in a file outside the database.

The formats are byte-for-byte those of the Go note package: its published test key and note
verify here (see ``tests/unit/test_signednote.py``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "InsecureKeyFileError",
    "InvalidSignatureError",
    "KeyFileError",
    "NoteError",
    "NoteSignature",
    "UnverifiedNoteError",
    "VerifierKey",
    "checkpoint_text",
    "key_id",
    "load_key",
    "load_or_create_key",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_note",
    "parse_vkey",
    "public_key_bytes",
    "sign_note",
    "validate_name",
    "verify_note",
    "vkey",
]

ALG_ED25519 = 0x01
"""The signature type byte of Ed25519 in c2sp.org/signed-note."""

SIGNATURE_PREFIX = "\u2014 "
"""Every signature line starts with an em dash (U+2014) and a space."""

MAX_SIGNATURES = 100
"""Lines a note may carry (Go's limit; c2sp.org/signed-note asks for at least 16)."""

_HASH_SIZE = 32
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A malformed note, checkpoint, verifier key or key name."""


class UnverifiedNoteError(NoteError):
    """The note carries no signature by the expected key (c2sp: the note MUST be rejected)."""


class InvalidSignatureError(NoteError):
    """The expected key's signature line is there but does not verify over the text."""


class KeyFileError(Exception):
    """The signing key file cannot be used (unreadable, not an Ed25519 PKCS#8 PEM key)."""


class InsecureKeyFileError(KeyFileError):
    """The signing key file is readable or writable by others than its owner."""


def validate_name(name: str, what: str = "key name") -> str:
    """Return ``name`` if it can name a key or an origin, else raise :class:`NoteError`.

    c2sp.org/signed-note: non-empty, no Unicode space, no ``+`` (it separates the parts of
    a vkey). Control characters are refused too: a note may contain none but newline.
    """
    if not isinstance(name, str) or not name:
        raise NoteError(f"{what} must be a non-empty string")
    for ch in name:
        if ch == "+" or ch.isspace() or ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            raise NoteError(f"{what} {name!r} contains {ch!r}: no spaces, '+' or control chars")
    return name


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str, *, canonical: bool = False) -> bytes:
    """Standard base64 with padding (RFC 4648 §4), as Go's ``base64.StdEncoding``."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise NoteError(f"{what} is not standard base64: {text!r}") from e
    if canonical and _b64(raw) != text:
        raise NoteError(f"{what} is not canonical base64: {text!r}")
    return raw


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> bytes:
    """The 32-byte RFC 8032 encoding of an Ed25519 public key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, bytes) and len(key) == 32:
        return key
    raise NoteError("an Ed25519 public key is 32 bytes")


def key_id(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte key)[:4]`` (c2sp.org/signed-note, Ed25519)."""
    raw = public_key_bytes(public_key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + raw).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 verifier: what a vkey string encodes."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def of(cls, name: str, public_key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> VerifierKey:
        validate_name(name)
        raw = public_key_bytes(public_key)
        return cls(name, key_id(name, raw), raw)

    @property
    def vkey(self) -> str:
        """``<name>+<8 hex key id>+<base64(0x01 ‖ key)>``, as Go's ``NewEd25519VerifierKey``."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def vkey(name: str, public_key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """The verifier key string to publish: ``<name>+<hex key id>+<base64(0x01 ‖ key)>``."""
    return VerifierKey.of(name, public_key).vkey


def parse_vkey(text: str) -> VerifierKey:
    """Parse a vkey as Go's ``note.NewVerifier`` does; the key id must match the key.

    Only the first two ``+`` separate fields (the base64 key may contain ``+``).
    """
    name, sep1, rest = text.partition("+")
    hex_id, sep2, key64 = rest.partition("+")
    if not (sep1 and sep2) or not _HEX8.fullmatch(hex_id):
        raise NoteError(f"malformed verifier key {text!r}: want <name>+<8 hex>+<base64 key>")
    validate_name(name)
    key = _unb64(key64, "verifier key")
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise NoteError(f"verifier key {name!r} is not an Ed25519 key (type 0x01, 32 bytes)")
    verifier = VerifierKey(name, bytes.fromhex(hex_id), key[1:])
    if key_id(name, verifier.public_key) != verifier.key_id:
        raise NoteError(f"verifier key {name!r}: key id {hex_id} does not match its key")
    return verifier


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note: the key it names, and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def key(self) -> str:
        """``name+hexid``, as Go prints an unknown key."""
        return f"{self.name}+{self.key_id.hex()}"


def _check_note_chars(text: str, what: str) -> None:
    """c2sp.org/signed-note: valid UTF-8, no control character but newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise NoteError(f"{what} is not valid UTF-8") from e
    for ch in text:
        if ord(ch) < 0x20 and ch != "\n":
            raise NoteError(f"{what} contains the control character {ch!r}")


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and its signature lines, verifying nothing.

    The text ends at the note's last blank line and includes its final newline; every
    following line must be a signature line (Go's ``note.Open``).
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("note is not valid UTF-8") from e
    _check_note_chars(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("note has no signature line, or its last line lacks a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signature lines")
    sigs: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line (must start with an em dash): {line!r}")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        validate_name(name, "signature key name")
        raw = _unb64(b64, f"signature by {name!r}") if b64 else b""
        if len(raw) < 5:
            raise NoteError(f"signature by {name!r} is too short")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, sigs


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """``text ‖ "\\n" ‖ "— <name> <base64(key id ‖ Ed25519(text))>\\n"``.

    The same bytes as Go's ``note.Sign`` for one signer (Ed25519 is deterministic).
    """
    validate_name(name)
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_note_chars(text, "note text")
    message = text.encode("utf-8")
    kid = key_id(name, private_key.public_key())
    signature = private_key.sign(message)
    return f"{text}\n{SIGNATURE_PREFIX}{name} {_b64(kid + signature)}\n"


def _verifier_of(
    key: VerifierKey | str | tuple[str, Ed25519PublicKey | bytes],
) -> VerifierKey:
    if isinstance(key, VerifierKey):
        return key
    if isinstance(key, str):
        return parse_vkey(key)
    name, public_key = key
    return VerifierKey.of(name, public_key)


def verify_note(
    note: str | bytes,
    key: VerifierKey | str | tuple[str, Ed25519PublicKey | bytes],
) -> str:
    """The note's text, once a signature by ``key`` (a vkey, or name and public key) verifies.

    Signatures by other keys (witnesses, a rotated key) are ignored, as c2sp.org/signed-note
    requires; a key matches on name *and* key id. Raises :class:`UnverifiedNoteError` when
    no line is by ``key``, :class:`InvalidSignatureError` when one is and fails, and
    :class:`NoteError` for a malformed note.
    """
    verifier = _verifier_of(key)
    text, sigs = parse_note(note)
    message = text.encode("utf-8")
    found = False
    for sig in sigs:
        if sig.name != verifier.name or sig.key_id != verifier.key_id:
            continue
        if not verifier.verify(message, sig.signature):
            raise InvalidSignatureError(
                f"the signature by {sig.key} does not verify: the note was altered or forged"
            )
        found = True
    if not found:
        others = ", ".join(s.key for s in sigs) or "none"
        raise UnverifiedNoteError(
            f"the note is not signed by {verifier.name}+{verifier.key_id.hex()} "
            f"(signatures by: {others})"
        )
    return text


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed c2sp.org/tlog-checkpoint: what the log commits to at one size."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        return checkpoint_text(self.origin, self.size, self.root_hash, self.extensions)


def checkpoint_text(
    origin: str, size: int, root_hash: bytes, extensions: Iterable[str] = ()
) -> str:
    """``<origin>\\n<size>\\n<base64 root>\\n`` then one line per extension.

    The origin names the log (unique per deployment; no spaces, no ``+``). Extension lines
    must be non-empty; c2sp.org/tlog-checkpoint discourages them (monitors cannot audit them).
    """
    validate_name(origin, "origin")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise NoteError(f"tree size must be a non-negative integer, not {size!r}")
    if not isinstance(root_hash, bytes) or len(root_hash) != _HASH_SIZE:
        raise NoteError(f"root hash must be {_HASH_SIZE} bytes")
    lines = [origin, str(size), _b64(root_hash)]
    for ext in extensions:
        if not ext or "\n" in ext:
            raise NoteError(f"extension line must be one non-empty line: {ext!r}")
        _check_note_chars(ext, "extension line")
        lines.append(ext)
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint's text (a note's text, signature already checked)."""
    if not text.endswith("\n"):
        raise NoteError("checkpoint text must end with a newline")
    _check_note_chars(text, "checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs an origin, a size and a root hash line")
    if any(not line for line in lines):
        raise NoteError("checkpoint lines must be non-empty")
    origin, size_line, root_line, *extensions = lines
    validate_name(origin, "origin")
    if not _DECIMAL.fullmatch(size_line):
        raise NoteError(f"checkpoint size is not a decimal without leading zeros: {size_line!r}")
    root_hash = _unb64(root_line, "checkpoint root hash", canonical=True)
    if len(root_hash) != _HASH_SIZE:
        raise NoteError(f"checkpoint root hash is {len(root_hash)} bytes, not {_HASH_SIZE}")
    return Checkpoint(origin, int(size_line), root_hash, tuple(extensions))


def open_checkpoint(
    note: str | bytes,
    key: VerifierKey | str | tuple[str, Ed25519PublicKey | bytes],
    origin: str | None = None,
) -> Checkpoint:
    """Verify a checkpoint note with ``key`` and parse it; optionally insist on its origin."""
    checkpoint = parse_checkpoint(verify_note(note, key))
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint origin is {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint


# --- the signing key file ---------------------------------------------------------------


def load_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from an unencrypted PKCS#8 PEM file readable by its owner only.

    A key that group or others can read (or write) is refused with
    :class:`InsecureKeyFileError` rather than used: anyone who can read it can sign a
    rewritten log, which is what the checkpoints exist to rule out. (In Kubernetes, mount the
    secret with ``defaultMode: 0400``.) ``FileNotFoundError`` passes through.
    """
    # O_NONBLOCK: a FIFO put in the key's place must not hang the start.
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise KeyFileError(f"audit signing key {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(st.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise InsecureKeyFileError(
                f"audit signing key {path} has mode {mode:04o}: group or others may read or "
                f"write it; make it readable by its owner only (chmod 600 {path})"
            )
        data = f.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError(
            f"audit signing key {path} is not an unencrypted PKCS#8 PEM private key: {e}"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"audit signing key {path} is not an Ed25519 key")
    return key


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The signing key at ``path``, created (mode 0600) if absent; ``True`` if just created.

    Creation never replaces a file and never exposes a partial one: the PEM is written to a
    temporary file opened ``O_CREAT | O_EXCL`` with mode 0600 in the same directory, synced,
    then hard-linked into place (the link fails if ``path`` exists, e.g. another process
    won the race: its key is then loaded). The parent directory is created (0700) if absent.
    An existing file is loaded with :func:`load_key`, which refuses a group/world-readable key.
    """
    path = Path(path)
    try:
        return load_key(path), False
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    _write_new(tmp, pem)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return load_key(path), False
    except OSError:
        # A filesystem without hard links: create the file itself, still O_EXCL and 0600.
        try:
            _write_new(path, pem)
        except FileExistsError:
            return load_key(path), False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return key, True


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file) with mode 0600, write ``data`` and sync it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
