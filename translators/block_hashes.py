"""Per-block content hashes kept as one compact byte array: the memory of a block-level
incremental (SQLite pages, volume chunks).

Why a flat ``bytes`` of ``HASH_LEN``-byte digests and not a list: a 1 GB database has 262,144
pages; one Python object per page would cost ~30 MB and seconds, the array costs 4 MiB and
travels in the translator state as one base64 string.
"""

from __future__ import annotations

import base64
import hashlib

import blake3

HASH_LEN = 16  # sha256 truncated: collisions are out of reach; sha256 runs on SHA-NI here
ZERO_HASH = bytes(HASH_LEN)  # reserved: "this block is all zeros" (a real digest never is)


def block_hash(data) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_LEN]


def page_hash(data) -> bytes:
    """BLAKE3 cut to ``HASH_LEN``: for many small blocks (SQLite pages) it costs about 60% of
    a sha256 call, and a 1 GB database hashes 262,144 of them on every backup."""
    return blake3.blake3(data).digest(HASH_LEN)


def hash_at(hashes: bytes | bytearray, i: int) -> bytes | None:
    """Block ``i``'s digest, or None past the end (a block the parent did not have)."""
    off = i * HASH_LEN
    return bytes(hashes[off:off + HASH_LEN]) if off + HASH_LEN <= len(hashes) else None


def encode(hashes: bytes | bytearray) -> str:
    return base64.b64encode(hashes).decode("ascii")


def decode(text: str | None) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if len(raw) % HASH_LEN == 0 else None
