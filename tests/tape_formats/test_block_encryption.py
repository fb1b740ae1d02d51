"""Encrypted blocks on a cartridge: AES-256-GCM per block, key only in memory.

Written with a key, a block is stored as an envelope (no plaintext on disk, the key's
signature and KAD in clear); read back it needs the same key, and without it or with another
one the cartridge says which (the drive turns that into DATA PROTECT 74/xx). Plain blocks
read as before, unless the drive decrypts only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tape_formats.block_crypto import (
    CryptoSettings,
    DataKey,
    DecryptError,
    DecryptMode,
    EncryptMode,
    seal,
    unseal,
)
from tape_formats.cartridge import (
    RecordKind,
    TapeCartridge,
    UndecryptableBlock,
    verify_cartridge,
)
from tape_formats.media import MEDIA
from tape_formats.records import IncompatFeature

KEY = DataKey(bytes(range(32)), kad=b"\x00\x00\x00\x05hello")
OTHER = DataKey(bytes(32))
ON = CryptoSettings(EncryptMode.ENCRYPT, DecryptMode.MIXED, KEY)
TEXT = b"plaintext that must not reach the disk " * 100


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "E00001L8.vtape"
    TapeCartridge.create(p, "E00001L8", MEDIA["LTO-8"], capacity=1 << 30)
    return p


def _write(path: Path, settings: CryptoSettings | None, blocks: list[bytes],
           *, queued: bool = False) -> None:
    with TapeCartridge.open(path) as c:
        c.set_crypto(settings)
        c.space_to_eod()
        for b in blocks:
            if not (queued and c.queue_block(b)):
                c.write_block(b)
        c.write_filemarks(1)


def test_encrypted_blocks_read_back_with_the_key(path: Path) -> None:
    _write(path, ON, [TEXT, os.urandom(5000), b"x"])
    _write(path, ON, [TEXT * 30], queued=True)  # through the write-behind packers too
    raw = path.read_bytes()
    assert b"plaintext that must not" not in raw and KEY.key not in raw
    assert b"hello" in raw  # the KAD is in clear, as on a real cartridge
    with TapeCartridge.open(path) as c:
        assert c.format_features & IncompatFeature.ENCRYPTED_BLOCKS
        c.set_crypto(ON)
        assert bytes(c.read_block().data) == TEXT
        assert len(c.read_block().data) == 5000
        assert bytes(c.read_block(bytearray(10)).data) == b"x"
        assert c.read_block().kind is RecordKind.FILEMARK
        assert bytes(c.read_block().data) == TEXT * 30
        env = c.block_envelope(0)
        assert env is not None and env.kad == KEY.kad and env.signature == KEY.signature
    assert verify_cartridge(path).ok


@pytest.mark.parametrize(("settings", "reason"), [
    (None, DecryptError.NO_KEY),
    (CryptoSettings(EncryptMode.DISABLE, DecryptMode.DISABLE, KEY), DecryptError.NO_KEY),
    (CryptoSettings(EncryptMode.DISABLE, DecryptMode.MIXED, OTHER), DecryptError.WRONG_KEY),
])
def test_without_the_key_a_block_is_refused(path: Path, settings, reason: str) -> None:
    _write(path, ON, [TEXT, b"second"])
    with TapeCartridge.open(path) as c:
        c.set_crypto(settings)
        c.read_ahead()  # a failed read-ahead caches nothing
        with pytest.raises(UndecryptableBlock) as err:
            c.read_block()
        assert err.value.reason == reason and err.value.position == 0
        assert err.value.kad == KEY.kad
        c.set_crypto(ON)  # the key given later: the same block reads
        assert bytes(c.read_block().data) == TEXT


def test_the_key_alone_decrypts_whatever_kad_the_drive_has_now(path: Path) -> None:
    _write(path, ON, [b"y" * 100])
    with TapeCartridge.open(path) as c:
        c.set_crypto(CryptoSettings(EncryptMode.ENCRYPT, DecryptMode.MIXED,
                                    DataKey(KEY.key, kad=b"")))
        assert bytes(c.read_block().data) == b"y" * 100  # the KAD is the block's, not ours


@pytest.mark.parametrize("where", [1, 30, -1])  # nonce, KAD, tag
def test_a_changed_envelope_fails_its_tag(where: int) -> None:
    sealed = bytearray(seal(KEY, b"z" * 64, 64))
    sealed[where] ^= 1
    with pytest.raises(DecryptError) as err:
        unseal(ON, sealed, 64)
    assert err.value.reason == DecryptError.INTEGRITY
    with pytest.raises(DecryptError):
        unseal(ON, seal(KEY, b"z" * 64, 64), 65)  # the native length is authenticated


def test_plain_blocks_and_decrypt_only(path: Path) -> None:
    _write(path, None, [b"plain"])
    with TapeCartridge.open(path) as c:
        assert not c.format_features & IncompatFeature.ENCRYPTED_BLOCKS
        c.set_crypto(ON)  # mixed: plain blocks pass
        assert bytes(c.read_block().data) == b"plain"
        c.rewind()
        c.set_crypto(CryptoSettings(EncryptMode.DISABLE, DecryptMode.DECRYPT, KEY))
        with pytest.raises(UndecryptableBlock) as err:
            c.read_block()
        assert err.value.reason == DecryptError.NOT_ENCRYPTED
        assert c.block_envelope(0) is None


def test_a_key_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DataKey(b"short")


@pytest.mark.parametrize("data_runs", [False, True])
def test_plain_runs_of_blocks_read_as_plain_blocks(path: Path, data_runs: bool) -> None:
    """Blocks a fixed-mode WRITE stored in the clear (one record each, or a DATA_RUN) read
    alike under each setting: refused while the drive decrypts only, else read."""
    text = TEXT * 3
    with TapeCartridge.open(path) as c:
        c.data_runs = data_runs
        assert c.write_blocks(memoryview(text[: 512 * 20]), 512) == 20
        assert (c.index.records == 1) == data_runs
        for settings in (CryptoSettings(EncryptMode.DISABLE, DecryptMode.DECRYPT, KEY),
                         CryptoSettings(EncryptMode.DISABLE, DecryptMode.MIXED, KEY), None):
            c.set_crypto(settings)
            c.locate(3)
            if settings is not None and settings.decrypt == DecryptMode.DECRYPT:
                with pytest.raises(UndecryptableBlock) as err:
                    c.read_block()
                assert err.value.reason == DecryptError.NOT_ENCRYPTED and c.position == 3
                assert c.read_blocks(memoryview(bytearray(512 * 4)), 512) == 0
            else:
                assert bytes(c.read_block().data) == text[512 * 3 : 512 * 4]
                buf = memoryview(bytearray(512 * 4))
                assert c.read_blocks(buf, 512) == 4 and bytes(buf) == text[512 * 4 : 512 * 8]
