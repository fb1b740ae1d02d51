"""Per-block AES-256-GCM for backups, so a stolen cartridge file reveals nothing.

Key derivation (stated here because restores years later depend on it):
    master = scrypt(secret, salt=16 random bytes, n=2**15, r=8, p=1, length=64)
    enc_key = master[:32]               (AES-256-GCM key)
    kcv     = HMAC-SHA256(master[32:], b"ebm key check v1")[:16]
``secret`` is the passphrase (UTF-8, trailing newline of a passphrase file stripped) or the
raw bytes of a key file. salt, n, r, p and kcv are stored in the backup header's options
(``crypto``), so a wrong passphrase is refused up front, before any block is read.

Encryption is a property of the dataset: its catalog row keeps a *key verifier* (its own
random salt, the scrypt params and the kcv derived with them: never the key), made by the
first encrypted backup; every later backup must bring a secret that matches it
(:func:`check_key`), so no incremental of an encrypted dataset is written in plaintext or
under another key.

Each tape block carries ``flags(1) || AES-GCM(enc_key, nonce, payload, aad)``:
- flags bit 0: payload is zstd-compressed (we compress before encrypting, since the drive's
  compression cannot shrink ciphertext);
- nonce = SHA-256(uuid)[:4] || block number (8 bytes, big endian); block numbers are unique
  within a backup and every backup has its own salt (hence its own key), so a nonce is never
  reused under one key. Trailer blocks use numbers with bit 63 set.
- aad = uuid || block number || flags, so blocks cannot be swapped or moved undetected.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KDF_N = 2**15
KDF_R = 8
KDF_P = 1
TRAILER_BASE = 1 << 63
FLAG_ZSTD = 1


class CryptoError(Exception):
    """Wrong key, or a block that fails authentication (one-line message)."""


class WrongKey(CryptoError):
    pass


class BlockAuthError(CryptoError):
    pass


# The passphrase from the environment, when no file is named: kept out of ``ps`` like a file.
PASSPHRASE_ENV = "EBM_PASSPHRASE"


def read_secret(passphrase_file: Path | None = None, key_file: Path | None = None,
                passphrase: str | None = None) -> bytes:
    """The secret bytes from exactly one source (else ``$EBM_PASSPHRASE``); errors are one line."""
    if passphrase is not None:
        secret = passphrase.encode()
    elif passphrase_file is not None:
        try:
            secret = Path(passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise CryptoError(f"cannot read passphrase file {passphrase_file}: {e.strerror}") from None
    elif key_file is not None:
        try:
            secret = Path(key_file).read_bytes()
        except OSError as e:
            raise CryptoError(f"cannot read key file {key_file}: {e.strerror}") from None
    elif os.environ.get(PASSPHRASE_ENV):
        secret = os.environ[PASSPHRASE_ENV].encode()
    else:
        raise CryptoError(f"encryption needs --passphrase-file, --key-file or ${PASSPHRASE_ENV}")
    if not secret:
        raise CryptoError("the passphrase/key is empty")
    return secret


@dataclass
class BlockCipher:
    """Seals and opens the tape blocks of one backup."""

    key: bytes
    uuid: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        self._aead = AESGCM(self.key)
        self._prefix = hashlib.sha256(self.uuid.encode()).digest()[:4]
        self._cctx = zstandard.ZstdCompressor(level=3)
        self._dctx = zstandard.ZstdDecompressor()

    @classmethod
    def new(cls, secret: bytes, uuid: str) -> BlockCipher:
        salt = os.urandom(16)
        key, kcv = _derive(secret, salt, KDF_N, KDF_R, KDF_P)
        params = {"alg": "AES-256-GCM", "kdf": "scrypt", "salt": salt.hex(), "n": KDF_N,
                  "r": KDF_R, "p": KDF_P, "kcv": kcv.hex()}
        return cls(key, uuid, params)

    @classmethod
    def open(cls, secret: bytes, uuid: str, params: dict[str, Any]) -> BlockCipher:
        """Derive the key from stored params; WrongKey if the check value differs."""
        return cls(check_key(secret, params, f"backup {uuid}"), uuid, params)

    def _nonce_aad(self, number: int, flags: int) -> tuple[bytes, bytes]:
        n8 = struct.pack(">Q", number)
        return self._prefix + n8, self.uuid.encode() + n8 + bytes([flags])

    def seal(self, number: int, data: bytes | memoryview, *, compress: bool = True) -> bytes:
        flags = 0
        payload: bytes | memoryview = data
        if compress:
            c = self._cctx.compress(data)
            if len(c) < len(data):
                payload, flags = c, FLAG_ZSTD
        nonce, aad = self._nonce_aad(number, flags)
        return bytes([flags]) + self._aead.encrypt(nonce, bytes(payload), aad)

    def open_block(self, number: int, block: bytes | memoryview, where: str) -> bytes:
        """Authenticate and decrypt; ``where`` names cartridge/file/block for the error."""
        if len(block) < 17:
            raise BlockAuthError(f"{where} is corrupt or the key is wrong (short block)")
        flags = block[0]
        nonce, aad = self._nonce_aad(number, flags)
        try:
            plain = self._aead.decrypt(nonce, bytes(block[1:]), aad)
        except InvalidTag:
            raise BlockAuthError(f"{where} is corrupt or the key is wrong") from None
        if flags & FLAG_ZSTD:
            plain = self._dctx.decompress(plain)
        return plain


def key_verifier(secret: bytes) -> dict[str, Any]:
    """A fresh salt, the KDF params and the key check value for ``secret``: what a dataset
    keeps so that a later backup can refuse a missing or wrong key before writing."""
    salt = os.urandom(16)
    _key, kcv = _derive(secret, salt, KDF_N, KDF_R, KDF_P)
    return {"kdf": "scrypt", "salt": salt.hex(), "n": KDF_N, "r": KDF_R, "p": KDF_P,
            "kcv": kcv.hex()}


def check_key(secret: bytes, params: dict[str, Any], what: str) -> bytes:
    """The key ``secret`` derives under ``params`` (a backup's crypto or a dataset's
    verifier); WrongKey naming ``what`` if its check value differs."""
    try:
        key, kcv = _derive(secret, bytes.fromhex(params["salt"]), int(params["n"]),
                           int(params["r"]), int(params["p"]))
    except (KeyError, ValueError) as e:
        raise CryptoError(f"{what} has unusable encryption parameters ({e})") from None
    if not hmac.compare_digest(kcv.hex(), params.get("kcv", "")):
        raise WrongKey(f"wrong passphrase or key for {what}")
    return key


def _derive(secret: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    master = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(secret)
    kcv = hmac.new(master[32:], b"ebm key check v1", hashlib.sha256).digest()[:16]
    return master[:32], kcv
