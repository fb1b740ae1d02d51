"""The drive's own encryption (SSC-4 tape data encryption) as the EBM uses it remotely.

Why the drive, not the EBM: ``ebm.crypto`` encrypts on the EBM host, which costs that host's
CPU and keeps the tape readable only by the EBM; an LTO drive encrypts every block itself
(AES-256-GCM) once it holds a key, as backup software hands it one with SECURITY PROTOCOL
OUT. Here: the key file, the set data encryption page (protocol 0x20, page 0x0010) that
loads or clears the key, and the reading of the capabilities (0x0010) and status (0x0020)
pages. ``remote_library`` sends the key to a claimed drive when it mounts a cartridge and
clears it before the cartridge leaves the drive and when the drive is released.

What it must not do: write the key anywhere. The catalog keeps only ``DriveKey.signature``
(a one-way hash: which key a backup needs) and the drive gets the same signature as
key-associated data (U-KAD), so a cartridge shows which key it wants without revealing it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ebm.remote.scsi_client import ILLEGAL_REQUEST, ScsiError, TapeDevice
from vtl.errors import LibraryError

TAPE_DATA_ENCRYPTION = 0x20  # security protocol
CAPABILITIES = 0x0010  # IN: data encryption capabilities; OUT: set data encryption
STATUS = 0x0020
AES_256_GCM_128 = 0x00010014  # SECURITY ALGORITHM CODE
KEY_BYTES = 32
ENCRYPT, DECRYPT_MIXED = 0x02, 0x03  # ENCRYPTION MODE / DECRYPTION MODE (MIXED: plain too)
SCOPE_ALL_I_T_NEXUS = 2
_CAPABLE = 0x2  # ENCRYPT_C / DECRYPT_C: capable under host control
_UKAD = 0x00
_SIGNATURE_LABEL = b"ebm drive encryption key\x00"


class DriveEncryptionError(LibraryError):
    """A key file that is no key, or a drive that cannot encrypt: one line, refused (exit 2)
    before any cartridge moves."""


@dataclass(frozen=True)
class DriveKey:
    """A 256-bit key for the drive, and its signature (what the catalog may keep)."""

    key: bytes = field(repr=False)
    signature: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise DriveEncryptionError(f"a drive key has {KEY_BYTES} bytes, not {len(self.key)}")
        sig = hashlib.sha256(_SIGNATURE_LABEL + self.key).hexdigest()[:16]
        object.__setattr__(self, "signature", sig)

    @property
    def kad(self) -> bytes:
        """The key-associated data the drive writes with every block: the signature."""
        return f"ebm:{self.signature}".encode()


def read_drive_key(path: Path) -> DriveKey:
    """The key in ``path``: 32 raw bytes, or 64 hexadecimal digits (a line)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DriveEncryptionError(f"cannot read drive key file {path}: {e.strerror}") from None
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return DriveKey(bytes.fromhex(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == KEY_BYTES:
        return DriveKey(raw)
    raise DriveEncryptionError(f"drive key file {path} holds no AES-256 key (32 bytes, or 64 "
                               "hexadecimal digits)")


def set_data_encryption(key: DriveKey | None, algorithm: int = 1) -> bytes:
    """The set data encryption page: encrypt and decrypt (mixed) with ``key``, or, for None,
    encryption and decryption off (the key cleared). CKOD is set: the drive drops the key
    when the cartridge leaves it, should the EBM not get to clear it."""
    body = bytearray(16)
    body[0] = SCOPE_ALL_I_T_NEXUS << 5
    body[1] = 0x04  # CKOD
    if key is not None:
        body[2], body[3], body[4] = ENCRYPT, DECRYPT_MIXED, algorithm
        body[14:16] = KEY_BYTES.to_bytes(2, "big")
        kad = key.kad
        body += key.key + bytes([_UKAD, 0]) + len(kad).to_bytes(2, "big") + kad
    return CAPABILITIES.to_bytes(2, "big") + len(body).to_bytes(2, "big") + bytes(body)


def aes_algorithm(tape: TapeDevice) -> int:
    """The drive's algorithm index for AES-256-GCM under host control (capabilities page);
    DriveEncryptionError when it has none (no SECURITY PROTOCOL, or no such algorithm)."""
    try:
        page = tape.security_protocol_in(TAPE_DATA_ENCRYPTION, CAPABILITIES)
    except ScsiError as e:
        if e.sense is not None and e.sense.key == ILLEGAL_REQUEST:
            raise DriveEncryptionError(f"{tape.name} does not offer data encryption "
                                       "(SECURITY PROTOCOL IN refused)") from None
        raise
    end = min(len(page), 4 + int.from_bytes(page[2:4], "big")) if len(page) >= 4 else 0
    off = 20  # page header and the configuration bytes before the descriptors
    while off + 24 <= end:
        desc = page[off:off + 4 + int.from_bytes(page[off + 2:off + 4], "big")]
        if len(desc) >= 24 and int.from_bytes(desc[20:24], "big") == AES_256_GCM_128 \
                and desc[4] & 0x3 == _CAPABLE and (desc[4] >> 2) & 0x3 == _CAPABLE \
                and int.from_bytes(desc[10:12], "big") == KEY_BYTES:
            return desc[0]
        off += len(desc) if len(desc) > 4 else 24
    raise DriveEncryptionError(f"{tape.name} reports no AES-256-GCM encryption capability")


def encryption_status(tape: TapeDevice) -> tuple[int, int]:
    """(encryption mode, decryption mode) from the data encryption status page; (0, 0) is
    off, no key held."""
    page = tape.security_protocol_in(TAPE_DATA_ENCRYPTION, STATUS)
    if len(page) < 7:
        raise DriveEncryptionError(f"{tape.name}: short data encryption status page")
    return page[5], page[6]


def load_key(tape: TapeDevice, key: DriveKey, algorithm: int) -> None:
    tape.security_protocol_out(TAPE_DATA_ENCRYPTION, CAPABILITIES,
                               set_data_encryption(key, algorithm))


def clear_key(tape: TapeDevice) -> None:
    tape.security_protocol_out(TAPE_DATA_ENCRYPTION, CAPABILITIES, set_data_encryption(None))
