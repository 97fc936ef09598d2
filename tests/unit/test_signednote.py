"""core.signednote against the published vectors of Go's note package and of C2SP.

The Go vectors are from golang.org/x/mod, sumdb/note/note_test.go (TestSign, TestOpen,
TestNewVerifier); the C2SP one from c2sp.org/signed-note, "Verifier keys / Example".
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import merkle
from core.signednote import (
    Checkpoint,
    InsecureKeyFileError,
    InvalidSignatureError,
    KeyFileError,
    NoteError,
    UnverifiedNoteError,
    VerifierKey,
    checkpoint_text,
    key_id,
    load_key,
    load_or_create_key,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    public_key_bytes,
    sign_note,
    validate_name,
    verify_note,
    vkey,
)

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501
ENOCH_SIG = "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"  # noqa: E501
GO_NOTE = GO_TEXT + "\n" + PETER_SIG

C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"  # noqa: E501
)


def _go_private_key() -> Ed25519PrivateKey:
    """Go's signer key is PRIVATE+KEY+<name>+<id>+base64(0x01 ‖ 32-byte seed)."""
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 0x01 and len(raw) == 33
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


# --- vectors ----------------------------------------------------------------------------------


def test_go_key_id_and_vkey() -> None:
    key = _go_private_key()
    assert vkey("PeterNeumann", key) == GO_VKEY
    assert vkey("PeterNeumann", key.public_key()) == GO_VKEY
    assert key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    # The formula, spelled out: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4].
    raw = public_key_bytes(key)
    assert hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()[:4].hex() == "c74f20a3"
    parsed = parse_vkey(GO_VKEY)
    assert parsed == VerifierKey("PeterNeumann", bytes.fromhex("c74f20a3"), raw)
    assert parsed.vkey == GO_VKEY
    assert parse_vkey(ENOCH_VKEY).key_id.hex() == "af0cfe78"


def test_go_signed_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, "PeterNeumann", _go_private_key()) == GO_NOTE
    assert verify_note(GO_NOTE, GO_VKEY) == GO_TEXT
    assert (
        verify_note(GO_NOTE.encode(), ("PeterNeumann", _go_private_key().public_key())) == GO_TEXT
    )


def test_c2sp_example_note() -> None:
    assert verify_note(C2SP_NOTE, C2SP_VKEY) == "This is an example message.\n"
    assert parse_vkey(C2SP_VKEY).key_id.hex() == "530d903a"


def test_signatures_by_other_keys_are_ignored() -> None:
    both = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert verify_note(both, GO_VKEY) == GO_TEXT
    assert verify_note(both, ENOCH_VKEY) == GO_TEXT
    enoch_first = GO_TEXT + "\n" + ENOCH_SIG + PETER_SIG
    assert verify_note(enoch_first, GO_VKEY) == GO_TEXT
    _, sigs = parse_note(both)
    assert [s.key for s in sigs] == ["PeterNeumann+c74f20a3", "EnochRoot+af0cfe78"]


def test_note_without_the_key_is_unverified() -> None:
    only_enoch = GO_TEXT + "\n" + ENOCH_SIG
    with pytest.raises(UnverifiedNoteError, match=r"PeterNeumann\+c74f20a3.*EnochRoot\+af0cfe78"):
        verify_note(only_enoch, GO_VKEY)
    # Same name, other key (so another key id): ignored, hence unverified.
    impostor = Ed25519PrivateKey.generate()
    forged = sign_note(GO_TEXT, "PeterNeumann", impostor)
    with pytest.raises(UnverifiedNoteError):
        verify_note(forged, GO_VKEY)
    # The right key id under another name: also not the key.
    renamed = GO_NOTE.replace("\u2014 PeterNeumann ", "\u2014 CarmenSandiego ")
    with pytest.raises(UnverifiedNoteError):
        verify_note(renamed, GO_VKEY)


def test_tampered_text_or_signature_is_rejected() -> None:
    tampered = GO_NOTE.replace("cryptography", "cryptographY")
    with pytest.raises(InvalidSignatureError, match=r"PeterNeumann\+c74f20a3"):
        verify_note(tampered, GO_VKEY)
    # Go's own probe: four characters spliced into the base64 signature.
    spliced = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError):
        verify_note(spliced, GO_VKEY)
    # One bit of the signature flipped (key id intact).
    name, b64 = PETER_SIG[2:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 1
    flipped = GO_TEXT + f"\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(InvalidSignatureError):
        verify_note(flipped, GO_VKEY)
    # A valid signature alongside a bad one by the same key is still refused.
    with pytest.raises(InvalidSignatureError):
        verify_note(GO_NOTE + flipped.split("\n\n")[1], GO_VKEY)


@pytest.mark.parametrize(
    "bad",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG.replace("\u2014", "-"),
        GO_TEXT + "\n" + "\u2014 PeterNeumann AAAA\n",  # shorter than a key id and a byte
        GO_TEXT + "\n" + "\u2014 PeterNeumann !!!!\n",
        GO_TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_malformed_notes(bad: str) -> None:
    with pytest.raises(NoteError):
        verify_note(bad, GO_VKEY)


def test_malformed_note_bytes() -> None:
    with pytest.raises(NoteError):
        verify_note(b"\xff" + GO_NOTE.encode(), GO_VKEY)


def test_vkey_manglings_are_refused() -> None:
    """As Go's TestNewVerifier: every proper substring and every byte bumped by one."""
    b = GO_VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i == 0 and j == len(b):
                continue
            with pytest.raises(NoteError):
                parse_vkey(b[i:j].decode())
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(NoteError):
            parse_vkey(mangled.decode())
    # Wrong key length, and unknown algorithm, each with a key id adjusted to match (Go's).
    with pytest.raises(NoteError):
        parse_vkey("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(NoteError):
        parse_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    with pytest.raises(NoteError):
        parse_vkey("PeterNeumann+0x4f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_vkey_base64_may_contain_plus() -> None:
    for _ in range(64):
        key = Ed25519PrivateKey.generate()
        text = vkey("log.example/a", key)
        if "+" in text.split("+", 2)[2]:
            assert parse_vkey(text).public_key == public_key_bytes(key)
            return
    pytest.fail("no key with '+' in its base64 in 64 tries")


# --- round trips and checkpoints --------------------------------------------------------------


def test_round_trip_with_a_new_key() -> None:
    key = Ed25519PrivateKey.generate()
    text = "callgate.example/audit\n3\n" + base64.b64encode(b"\x07" * 32).decode() + "\n"
    note = sign_note(text, "callgate.example/audit", key)
    assert note.startswith(text + "\n\u2014 callgate.example/audit ")
    assert note.endswith("\n")
    assert verify_note(note, vkey("callgate.example/audit", key)) == text
    assert verify_note(note, VerifierKey.of("callgate.example/audit", key)) == text


def test_checkpoint_text_is_the_api_format() -> None:
    root = merkle.EMPTY_ROOT
    text = checkpoint_text("callgate.example/audit", 0, root)
    assert text == "callgate.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    with_ext = checkpoint_text("o", 12, b"\x01" * 32, ["Timestamp: 1700000000"])
    assert with_ext.endswith("\nTimestamp: 1700000000\n")
    cp = parse_checkpoint(with_ext)
    assert cp == Checkpoint("o", 12, b"\x01" * 32, ("Timestamp: 1700000000",))
    assert cp.text() == with_ext


def test_signed_checkpoint_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    root = bytes(range(32))
    note = sign_note(checkpoint_text("callgate.example/audit", 1234, root), "audit-key", key)
    # A blank line separates text and signature: text + "\n" + "— name sig\n".
    text, sigs = parse_note(note)
    assert (
        note
        == text
        + "\n"
        + f"\u2014 audit-key {base64.b64encode(sigs[0].key_id + sigs[0].signature).decode()}\n"
    )
    cp = open_checkpoint(note, vkey("audit-key", key), origin="callgate.example/audit")
    assert (cp.origin, cp.size, cp.root_hash) == ("callgate.example/audit", 1234, root)
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(note, vkey("audit-key", key), origin="other.example/audit")


@pytest.mark.parametrize(
    "text",
    [
        "o\n1\n",  # two lines
        "o\n1\n" + base64.b64encode(b"\x00" * 32).decode(),  # no final newline
        "o\n01\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",  # leading zero
        "o\n-1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "o\n+1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "o\n\u0661\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",  # Arabic-Indic one
        "o\n1\n" + base64.b64encode(b"\x00" * 31).decode() + "\n",  # 31 bytes
        "o\n1\n" + base64.b64encode(b"\x00" * 32).decode().rstrip("=") + "\n",  # no padding
        "o\n1\n" + base64.b64encode(b"\x00" * 32).decode()[:-2] + "B=\n",  # non-canonical
        "o\n1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n\n",  # empty extension
        "has space\n1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "a+b\n1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "\n1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_checkpoint_text_refuses_bad_input() -> None:
    with pytest.raises(NoteError):
        checkpoint_text("has space", 1, b"\x00" * 32)
    with pytest.raises(NoteError):
        checkpoint_text("a+b", 1, b"\x00" * 32)
    with pytest.raises(NoteError):
        checkpoint_text("", 1, b"\x00" * 32)
    with pytest.raises(NoteError):
        checkpoint_text("o", -1, b"\x00" * 32)
    with pytest.raises(NoteError):
        checkpoint_text("o", 1, b"\x00" * 31)
    with pytest.raises(NoteError):
        checkpoint_text("o", 1, b"\x00" * 32, ["two\nlines"])
    with pytest.raises(NoteError):
        checkpoint_text("o", 1, b"\x00" * 32, [""])


def test_names() -> None:
    assert validate_name("callgate.example/audit") == "callgate.example/audit"
    for bad in ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\nb", "a\x01b"]:
        with pytest.raises(NoteError):
            validate_name(bad)
    key = Ed25519PrivateKey.generate()
    with pytest.raises(NoteError):
        sign_note("text\n", "bad name", key)
    with pytest.raises(NoteError):
        sign_note("no final newline", "name", key)
    with pytest.raises(NoteError):
        sign_note("control \x07 char\n", "name", key)


# --- the key file -----------------------------------------------------------------------------


def test_key_file_is_created_0600_as_pkcs8_pem(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    old_umask = os.umask(0)  # a permissive umask must not widen the key's mode
    try:
        key, created = load_or_create_key(path)
    finally:
        os.umask(old_umask)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert [p.name for p in path.parent.iterdir()] == ["audit.pem"]  # no temporary left
    again, created_again = load_or_create_key(path)
    assert not created_again
    assert public_key_bytes(again) == public_key_bytes(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_key_file_readable_or_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "audit.pem"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(InsecureKeyFileError, match=rf"{path}.*{mode:04o}.*chmod 600"):
        load_or_create_key(path)
    with pytest.raises(InsecureKeyFileError):
        load_key(path)
    path.chmod(0o400)
    load_key(path)


def test_key_file_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyFileError, match="PKCS#8"):
        load_or_create_key(garbage)
    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec.chmod(0o600)
    with pytest.raises(KeyFileError, match="Ed25519"):
        load_or_create_key(ec)
    with pytest.raises(KeyFileError, match="regular file"):
        load_key(tmp_path)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    results: list[tuple[bytes, bool]] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        key, created = load_or_create_key(path)
        results.append((public_key_bytes(key), created))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({pub for pub, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["audit.pem"]
