"""SSC-4 tape data encryption: SECURITY PROTOCOL IN/OUT, protocol 0x20, of a tape drive.

What ``stenc`` (and backup software that manages keys itself) sends: SECURITY PROTOCOL OUT
with the set data encryption page (0x0010) hands the drive an AES-256 key, the encryption
and decryption modes and key-associated data (KAD); SECURITY PROTOCOL IN reads the supported
pages (0x0000, 0x0001), the data encryption capabilities (0x0010), the data encryption status
(0x0020) and the next block encryption status (0x0021). Protocol 0x00 lists the protocols.
The key is held here, in the drive's memory, and handed to the mounted cartridge
(``TapeCartridge.set_crypto``), which does the block work (``tape_formats.block_crypto``):
it is never written to disk, and a cartridge unloaded and loaded into another drive reads
only where that drive has the key.

Conditions (DATA PROTECT for reads the key settings refuse, as LTO drives and mhVTL answer):

=======================================  ===============================================
condition                                sense
=======================================  ===============================================
encrypted block, no key / not decrypting  DATA PROTECT 74/01 UNABLE TO DECRYPT DATA
encrypted block, another key              DATA PROTECT 74/03 INCORRECT DATA ENCRYPTION KEY
encrypted block, tag does not check       DATA PROTECT 74/04 CRYPTOGRAPHIC INTEGRITY ...
plain block while decrypting only         DATA PROTECT 74/02 UNENCRYPTED DATA ... DECRYPTING
unknown protocol / page, INC_512          ILLEGAL REQUEST 24/00, field pointer
a bad set data encryption page            ILLEGAL REQUEST 26/00, field pointer (byte)
page longer than the transfer             ILLEGAL REQUEST 1A/00
=======================================  ===============================================

A read refused this way moves past the block (as a read that fails does), with the residue
in INFORMATION. The drive offers one algorithm (index 1, AES-256-GCM-128, code 0x00010014),
no raw decryption mode and no external (host-side) encryption mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tape_formats.block_crypto import (
    KEY_BYTES,
    CryptoSettings,
    DataKey,
    DecryptError,
    DecryptMode,
    EncryptMode,
)
from tape_formats.cartridge import RecordKind, UndecryptableBlock
from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import (
    CRYPTOGRAPHIC_INTEGRITY_VALIDATION_FAILED,
    INCORRECT_DATA_ENCRYPTION_KEY,
    PARAMETER_LIST_LENGTH_ERROR,
    UNABLE_TO_DECRYPT_DATA,
    UNENCRYPTED_DATA_ENCOUNTERED_WHILE_DECRYPTING,
    Condition,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)
from vtl.scsi.spc import PR_READ, PR_WRITE, Request, command, parameter_list_length, trunc
from vtl.scsi.ssc_cdb import decode_security_protocol

if TYPE_CHECKING:
    from tape_formats.cartridge import TapeCartridge

PROTOCOL_INFORMATION = 0x00
PROTOCOL_TAPE_DATA_ENCRYPTION = 0x20
# protocol 0x20 pages
SUPPORTED_PAGES = 0x0000
SUPPORTED_OUT_PAGES = 0x0001
CAPABILITIES = 0x0010  # IN: data encryption capabilities; OUT: set data encryption
STATUS = 0x0020
NEXT_BLOCK_STATUS = 0x0021

ALGORITHM_INDEX = 1
AES_256_GCM_128 = 0x00010014  # SECURITY ALGORITHM CODE (SFSC)
KAD_UKAD, KAD_AKAD = 0, 1
MAX_KAD = {KAD_UKAD: 32, KAD_AKAD: 12}  # descriptor bytes, as LTO drives report

# NEXT BLOCK ENCRYPTION STATUS, ENCRYPTION STATUS field (SSC-4)
NOT_A_BLOCK, NOT_ENCRYPTED, ENCRYPTED_READABLE, ENCRYPTED_NO_KEY = 2, 3, 5, 6

_REFUSALS: dict[str, Condition] = {
    DecryptError.NO_KEY: UNABLE_TO_DECRYPT_DATA,
    DecryptError.WRONG_KEY: INCORRECT_DATA_ENCRYPTION_KEY,
    DecryptError.INTEGRITY: CRYPTOGRAPHIC_INTEGRITY_VALIDATION_FAILED,
    DecryptError.NOT_ENCRYPTED: UNENCRYPTED_DATA_ENCOUNTERED_WHILE_DECRYPTING,
}


def decrypt_refusal(exc: UndecryptableBlock) -> Condition:
    """The DATA PROTECT condition for a block the key settings do not let the drive read."""
    return _REFUSALS[exc.reason]


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _page(code: int, body: bytes) -> bytes:
    return _u16(code) + _u16(len(body)) + body


@dataclass
class DriveEncryption:
    """The drive's data encryption parameters (one set for every I_T nexus)."""

    settings: CryptoSettings = CryptoSettings()
    scope: int = 0  # SCOPE of the last set data encryption page (0 public, 2 all nexuses)
    clear_on_demount: bool = False  # CKOD
    key_instance: int = 0  # KEY INSTANCE COUNTER: +1 per set data encryption page

    def medium_removed(self) -> None:
        """CKOD: the key goes with the cartridge."""
        if self.clear_on_demount:
            self.settings = CryptoSettings()
            self.clear_on_demount = False


def _kad_descriptors(data: memoryview, start: int) -> bytes:
    """The KAD descriptors of a set data encryption page, checked (types, lengths) and
    normalised (authenticated bits cleared), as the drive keeps and reports them."""
    out = bytearray()
    off = start
    while off < len(data):
        if off + 4 > len(data):
            raise invalid_field_in_parameter_list(off)
        kind, length = data[off], int.from_bytes(data[off + 2:off + 4], "big")
        if kind not in MAX_KAD:
            raise invalid_field_in_parameter_list(off)
        if length > MAX_KAD[kind] or off + 4 + length > len(data):
            raise invalid_field_in_parameter_list(off + 2)
        out += bytes([kind, 0]) + _u16(length) + data[off + 4:off + 4 + length]
        off += 4 + length
    return bytes(out)


def parse_set_data_encryption(data: memoryview) -> tuple[CryptoSettings, int, bool]:
    """(settings, scope, CKOD) from a set data encryption page (SSC-4 8.5.4.2)."""
    if len(data) < 20:
        raise PARAMETER_LIST_LENGTH_ERROR()
    if int.from_bytes(data[0:2], "big") != CAPABILITIES:
        raise invalid_field_in_parameter_list(0)
    end = 4 + int.from_bytes(data[2:4], "big")
    if end > len(data):
        raise PARAMETER_LIST_LENGTH_ERROR()
    data = data[:end]
    scope = data[4] >> 5
    if scope > 2:
        raise invalid_field_in_parameter_list(4, 7)
    if data[5] & 0x08:  # SDK: supplemental decryption keys are not offered
        raise invalid_field_in_parameter_list(5, 3)
    if data[6] not in (EncryptMode.DISABLE, EncryptMode.ENCRYPT):
        raise invalid_field_in_parameter_list(6)
    if data[7] not in (DecryptMode.DISABLE, DecryptMode.DECRYPT, DecryptMode.MIXED):
        raise invalid_field_in_parameter_list(7)
    enc, dec = EncryptMode(data[6]), DecryptMode(data[7])
    if enc == EncryptMode.DISABLE and dec == DecryptMode.DISABLE:
        return CryptoSettings(), scope, bool(data[5] & 0x04)
    if data[8] != ALGORITHM_INDEX:
        raise invalid_field_in_parameter_list(8)
    if data[9] != 0:  # LOGICAL BLOCK ENCRYPTION KEY FORMAT: plain key only
        raise invalid_field_in_parameter_list(9)
    key_len = int.from_bytes(data[18:20], "big")
    if key_len != KEY_BYTES or 20 + key_len > len(data):
        raise invalid_field_in_parameter_list(18)
    kad = _kad_descriptors(data, 20 + key_len)
    key = DataKey(bytes(data[20:20 + key_len]), kad)
    return CryptoSettings(enc, dec, key), scope, bool(data[5] & 0x04)


def capabilities_page() -> bytes:
    """Data encryption capabilities (0x0010): one algorithm descriptor, AES-256-GCM."""
    desc = bytearray(24)
    desc[0] = ALGORITHM_INDEX
    desc[2:4] = _u16(20)
    desc[4] = 0x80 | 0x08 | 0x02  # AVFMV; DECRYPT_C and ENCRYPT_C: capable (10b)
    desc[6:8] = _u16(MAX_KAD[KAD_UKAD])
    desc[8:10] = _u16(MAX_KAD[KAD_AKAD])
    desc[10:12] = _u16(KEY_BYTES)
    desc[12] = 0xC0 | 0x02  # DKAD_C: KAD allowed; RDMC_C 001b: no raw decryption mode
    desc[20:24] = AES_256_GCM_128.to_bytes(4, "big")
    return _page(CAPABILITIES, bytes(16) + bytes(desc))


def status_page(enc: DriveEncryption) -> bytes:
    """Data encryption status (0x0020): modes, algorithm, key instance counter, KAD."""
    s = enc.settings
    body = bytearray(20)
    body[0] = enc.scope << 5  # I_T NEXUS SCOPE; KEY SCOPE 0
    body[1], body[2] = s.encrypt, s.decrypt
    body[3] = ALGORITHM_INDEX if s.key is not None else 0
    body[4:8] = enc.key_instance.to_bytes(4, "big")
    kad = s.key.kad if s.key is not None else b""
    return _page(STATUS, bytes(body) + kad)


def next_block_status(enc: DriveEncryption, cart: TapeCartridge) -> bytes:
    """Next block encryption status (0x0021) of the object at the position."""
    pos = cart.position
    body = bytearray(12)
    body[0:8] = pos.to_bytes(8, "big")
    kad = b""
    if cart.object_kind(pos) != RecordKind.DATA:
        body[8] = NOT_A_BLOCK
    else:
        env = cart.block_envelope(pos)
        key = enc.settings.key
        if env is None:
            body[8] = NOT_ENCRYPTED
        else:
            readable = (key is not None and key.signature == env.signature
                        and enc.settings.decrypt in (DecryptMode.DECRYPT, DecryptMode.MIXED))
            body[8] = ENCRYPTED_READABLE if readable else ENCRYPTED_NO_KEY
            body[9] = ALGORITHM_INDEX
            kad = env.kad if not readable else b""
    return _page(NEXT_BLOCK_STATUS, bytes(body) + kad)


def supported_protocols() -> bytes:
    """Protocol 0x00 page 0x0000: the protocols this drive speaks (SPC-4 7.7.1)."""
    protocols = bytes([PROTOCOL_INFORMATION, PROTOCOL_TAPE_DATA_ENCRYPTION])
    return bytes(6) + _u16(len(protocols)) + protocols


class EncryptionCommands:
    """SECURITY PROTOCOL IN/OUT for ``TapeDrive``: a mixin, so the commands join the
    drive's ``@command`` table. Expects ``self.encryption`` (DriveEncryption), ``self._cart``
    and ``self._medium()`` from the drive."""

    encryption: DriveEncryption
    _cart: TapeCartridge | None
    _medium: Callable[[], TapeCartridge]

    @command(Opcode.SECURITY_PROTOCOL_IN, "SECURITY PROTOCOL IN",
             "a2 ff ff ff 80 00 ff ff ff ff 00 00", pr=PR_READ)
    def cmd_security_protocol_in(self, req: Request) -> bytes:
        protocol, page, alloc = decode_security_protocol(req.cdb)
        if protocol == PROTOCOL_INFORMATION:
            if page == 0x0000:
                return trunc(supported_protocols(), alloc)
            if page == 0x0001:  # certificate data: none
                return trunc(bytes(4), alloc)
            raise invalid_field_in_cdb(2)
        if protocol != PROTOCOL_TAPE_DATA_ENCRYPTION:
            raise invalid_field_in_cdb(1)
        if page == SUPPORTED_PAGES:
            pages = (SUPPORTED_PAGES, SUPPORTED_OUT_PAGES, CAPABILITIES, STATUS,
                     NEXT_BLOCK_STATUS)
            out = _page(SUPPORTED_PAGES, b"".join(map(_u16, pages)))
        elif page == SUPPORTED_OUT_PAGES:
            out = _page(SUPPORTED_OUT_PAGES, _u16(CAPABILITIES))
        elif page == CAPABILITIES:
            out = capabilities_page()
        elif page == STATUS:
            out = status_page(self.encryption)
        elif page == NEXT_BLOCK_STATUS:
            out = next_block_status(self.encryption, self._medium())
        else:
            raise invalid_field_in_cdb(2)
        return trunc(out, alloc)

    @command(Opcode.SECURITY_PROTOCOL_OUT, "SECURITY PROTOCOL OUT",
             "b5 ff ff ff 80 00 ff ff ff ff 00 00", pr=PR_WRITE,
             data_out=parameter_list_length(6, 4))
    def cmd_security_protocol_out(self, req: Request) -> None:
        protocol, page, length = decode_security_protocol(req.cdb)
        if protocol != PROTOCOL_TAPE_DATA_ENCRYPTION:
            raise invalid_field_in_cdb(1)
        if page != CAPABILITIES:  # the set data encryption page
            raise invalid_field_in_cdb(2)
        settings, scope, ckod = parse_set_data_encryption(req.param_list(length))
        enc = self.encryption
        enc.settings, enc.scope, enc.clear_on_demount = settings, scope, ckod
        enc.key_instance = (enc.key_instance + 1) & 0xFFFFFFFF
        if self._cart is not None:
            self._cart.set_crypto(settings)
