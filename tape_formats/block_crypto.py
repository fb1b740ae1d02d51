"""Encryption of single data blocks, as an LTO drive's tape data encryption does it.

SSC-4 tape data encryption: the host hands the drive a 256-bit key (SECURITY PROTOCOL OUT,
``vtl.scsi.ssc_encryption``), the drive encrypts every block it writes with AES-256-GCM and
keeps the key in memory only. Here is the block part: an encrypted record's payload is an
*envelope* that says it is encrypted and with which key, so a read without the key, or with
another one, is told apart from a damaged block:

    offset 0   version (1)
    offset 1   nonce, 12 bytes (random per block: a key may write billions of blocks)
    offset 13  key signature, 8 bytes (a hash of the key: which key wrote this block)
    offset 21  KAD length, 2 bytes big-endian, then the key-associated data descriptors
               as SSC lays them out (what stenc shows as "Volume Key Desc.")
    then       AES-256-GCM ciphertext of the (possibly compressed) block, 16-byte tag

Everything before the ciphertext, and the block's native length, is authenticated data: a
changed KAD or length fails the tag. Compression happens first (ciphertext does not
compress). The key, and nothing derived from it but the signature, never reaches the disk.
This module never touches a cartridge file: ``tape_formats.cartridge`` does.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
ENVELOPE_VERSION = 1
NONCE_BYTES = 12
SIGNATURE_BYTES = 8
TAG_BYTES = 16
_HEAD = 1 + NONCE_BYTES + SIGNATURE_BYTES + 2  # envelope bytes before the KAD
ENVELOPE_OVERHEAD = _HEAD + TAG_BYTES  # plus the KAD: what a block grows by
_SIGNATURE_LABEL = b"vtl tape data encryption key signature\x00"


class EncryptMode(enum.IntEnum):
    """SSC-4 ENCRYPTION MODE of the set data encryption page."""

    DISABLE = 0
    EXTERNAL = 1
    ENCRYPT = 2


class DecryptMode(enum.IntEnum):
    """SSC-4 DECRYPTION MODE: what a read does with encrypted and plain blocks."""

    DISABLE = 0  # plain blocks only
    RAW = 1  # encrypted blocks as stored (not offered by this drive)
    DECRYPT = 2  # encrypted blocks only
    MIXED = 3  # both


class DecryptError(Exception):
    """A block that cannot be given to the host; ``reason`` is one of the class constants."""

    NO_KEY = "no key"  # encrypted, and the drive has no key or does not decrypt
    WRONG_KEY = "wrong key"  # encrypted with another key than the drive's
    INTEGRITY = "integrity"  # the drive's key, but the tag does not check
    NOT_ENCRYPTED = "not encrypted"  # a plain block while the drive decrypts only

    def __init__(self, reason: str, kad: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kad = kad


def key_signature(key: bytes) -> bytes:
    """Which key wrote a block, without the key: a one-way hash of it."""
    return hashlib.sha256(_SIGNATURE_LABEL + key).digest()[:SIGNATURE_BYTES]


@dataclass(frozen=True)
class DataKey:
    """A data encryption key as SET DATA ENCRYPTION gave it, with its KAD descriptors."""

    key: bytes = field(repr=False)
    kad: bytes = b""
    signature: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"an AES-256 key has {KEY_BYTES} bytes, not {len(self.key)}")
        object.__setattr__(self, "signature", key_signature(self.key))


@dataclass(frozen=True)
class CryptoSettings:
    """What the drive does with blocks: encrypt writes with ``key``, and which reads pass."""

    encrypt: EncryptMode = EncryptMode.DISABLE
    decrypt: DecryptMode = DecryptMode.DISABLE
    key: DataKey | None = None

    @property
    def sealing_key(self) -> DataKey | None:
        """The key new blocks are encrypted with, None when they are written plain."""
        return self.key if self.encrypt == EncryptMode.ENCRYPT else None


class Envelope(NamedTuple):
    """The clear part of an encrypted block: which key and KAD it was written with."""

    signature: bytes
    kad: bytes
    body: int  # offset of the ciphertext


def seal(key: DataKey, block: bytes | bytearray | memoryview, native_len: int) -> bytes:
    """The envelope of ``block`` (already compressed, if it was) under ``key``."""
    head = (bytes([ENVELOPE_VERSION]) + os.urandom(NONCE_BYTES) + key.signature
            + len(key.kad).to_bytes(2, "big") + key.kad)
    sealed = AESGCM(key.key).encrypt(head[1:1 + NONCE_BYTES], bytes(block),
                                     head + native_len.to_bytes(8, "big"))
    return head + sealed


def envelope(payload: bytes | bytearray | memoryview) -> Envelope | None:
    """The clear header of an encrypted payload, None when it is not a whole envelope."""
    if len(payload) < ENVELOPE_OVERHEAD or payload[0] != ENVELOPE_VERSION:
        return None
    kad_len = int.from_bytes(payload[_HEAD - 2:_HEAD], "big")
    body = _HEAD + kad_len
    if len(payload) < body + TAG_BYTES:
        return None
    sig = bytes(payload[1 + NONCE_BYTES:1 + NONCE_BYTES + SIGNATURE_BYTES])
    return Envelope(sig, bytes(payload[_HEAD:body]), body)


def unseal(settings: CryptoSettings | None, payload: bytes | bytearray | memoryview,
           native_len: int) -> bytes:
    """The block inside an envelope, if the drive's settings allow it; DecryptError if not
    (a damaged envelope header reads as INTEGRITY: its CRC checked, so it was written so)."""
    env = envelope(payload)
    if env is None:
        raise DecryptError(DecryptError.INTEGRITY)
    key = settings.key if settings is not None else None
    if key is None or settings.decrypt not in (DecryptMode.DECRYPT, DecryptMode.MIXED):
        raise DecryptError(DecryptError.NO_KEY, env.kad)
    if key.signature != env.signature:
        raise DecryptError(DecryptError.WRONG_KEY, env.kad)
    view = memoryview(payload)
    try:
        return AESGCM(key.key).decrypt(bytes(view[1:1 + NONCE_BYTES]), bytes(view[env.body:]),
                                       bytes(view[:env.body]) + native_len.to_bytes(8, "big"))
    except InvalidTag:
        raise DecryptError(DecryptError.INTEGRITY, env.kad) from None


def check_plain(settings: CryptoSettings | None) -> None:
    """A plain block is readable unless the drive decrypts only (DECRYPT mode)."""
    if settings is not None and settings.decrypt == DecryptMode.DECRYPT:
        raise DecryptError(DecryptError.NOT_ENCRYPTED)
