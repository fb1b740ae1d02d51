"""The read-ahead's usual case in C (vtl._fastpath.read_ahead, used by the drive's idle hook)
against the reference, TapeCartridge.read_ahead: two copies of one cartridge, one decoded by
each, must hold the same cache (block, lengths, bytes, ownership, span) after every call and
give the same READ results, through small and big blocks, compressed and not, filemarks and
runs of them, end of data, relocation, writes and damaged records (payload, header, a zstd
frame whose checksums are right but which does not decompress)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import crc32c
import pytest
from cartridge_io import mixed_objects, write_objects

from tape_formats.block_crypto import CryptoSettings, DecryptMode
from tape_formats.cartridge import CorruptRecord, RecordKind, TapeCartridge, UndecryptableBlock
from tape_formats.media import MEDIA
from tape_formats.read_ahead import SPAN_RECORD_MAX
from tape_formats.records import RECORD_HEADER_SIZE, RECORD_STRUCT, pack_record_header
from vtl.scsi import ssc

native = ssc._native
pytestmark = pytest.mark.skipif(native is None, reason="vtl._fastpath is not built (or off)")

TEXT = b"2026-12-04 host backup[4000]: wrote block ok\n" * 3000
SIZES = [10240, 10240, 65536, 300, 32768, 200000, 10240, 64512, 1, 131072, 10240]


def _blocks() -> list[bytes | int]:
    """Blocks (random or text, so stored as is or compressed) and filemark counts (ints)."""
    return mixed_objects(15, 90, SIZES, TEXT, {20: 1, 50: 3})


def _damage(path: Path, c: TapeCartridge, rec: int, how: str) -> None:
    off = c.index.offsets[rec]
    with open(path, "r+b") as f:
        f.seek(off)
        head = bytearray(f.read(RECORD_HEADER_SIZE))
        fields = RECORD_STRUCT.unpack(head)
        if how == "payload":  # one payload byte flipped: the payload CRC fails
            f.seek(off + RECORD_HEADER_SIZE + 7)
            b = f.read(1)
            f.seek(off + RECORD_HEADER_SIZE + 7)
            f.write(bytes([b[0] ^ 1]))
        elif how == "header":  # one header byte flipped: the header CRC fails
            f.seek(off + 9)
            f.write(bytes([head[9] ^ 1]))
        elif how == "zstd":  # garbage with right CRCs where a zstd frame was
            stored = fields[3]
            junk = bytes(range(256)) * (stored // 256 + 1)
            junk = junk[:stored]
            _, kind, flags, stored_len, native_len, file_no, o, _, _ = fields
            f.seek(off)
            f.write(pack_record_header(kind, flags, stored_len, native_len, file_no, o,
                                       crc32c.crc32c(junk)) + junk)


def _state(c: TapeCartridge) -> tuple:
    a = c._ahead
    held = (a.native, a.stored, bytes(a.data), a.own, a.lasting) if a.obj != -1 else None
    return c.position, a.obj, held, a.span_off, a.span_len


def _read(c: TapeCartridge, own: bool) -> tuple:
    try:
        r = c.read_block(bytearray(300000), own=own)
    except (CorruptRecord, UndecryptableBlock) as exc:
        c.position = exc.position + 1  # step past the bad block, as the drive does
        return type(exc).__name__, exc.position
    return r.kind, r.length, bytes(r.data) if r.kind == RecordKind.DATA else None, c.position


def _half_compressible(rnd: random.Random, n: int) -> bytes:
    """4 KiB of random bytes, 4 KiB of text, ... (bench_drive.py's mixed data): stored
    compressed, at about half its size."""
    return b"".join(rnd.randbytes(4096) if k % 2 else TEXT[k * 61:k * 61 + 4096]
                    for k in range(n // 4096 + 1))[:n]


def _big_twins(tmp_path: Path) -> None:
    """Compressed records too big for the span (300,000-byte blocks of half compressible
    data), between blocks stored as is and small ones, three of them damaged."""
    p = tmp_path / "A00001L8.vtape"
    TapeCartridge.create(p, "A00001L8", MEDIA["LTO-8"], capacity=256 << 20)
    c = TapeCartridge.open(p)
    rnd = random.Random(7)
    blocks: list[bytes | int] = []
    for i in range(40):
        blocks.append(_half_compressible(rnd, 300000) if i % 4 else
                      rnd.randbytes(200000) if i % 8 else TEXT[i:i + 10240])
        if i in (9, 25):
            blocks.append(1 + i % 3)
    data_recs = write_objects(c, blocks)
    idx = c.index
    big = [r for r in data_recs if idx.meta[r] & (1 << 8) and idx.meta[r] >> 16 == 300000]
    assert len(big) == 30
    ends = list(idx.offsets[1:]) + [idx.end]
    assert all(ends[r] - idx.offsets[r] > SPAN_RECORD_MAX for r in big)
    c.close()
    _damage(p, c, big[3], "payload")
    _damage(p, c, big[11], "header")
    _damage(p, c, big[20], "zstd")


@pytest.fixture(params=["mixed sizes", "big compressed"])
def twins(tmp_path: Path, request: pytest.FixtureRequest):
    p = tmp_path / "A00001L8.vtape"
    if request.param == "big compressed":
        _big_twins(tmp_path)
        yield from _copies(tmp_path, p)
        return
    TapeCartridge.create(p, "A00001L8", MEDIA["LTO-8"], capacity=256 << 20)
    c = TapeCartridge.open(p)
    data_recs = write_objects(c, _blocks())
    idx = c.index
    compressed = [r for r in data_recs if idx.meta[r] & (1 << 8)]
    assert idx.run_rec  # objects and records differ past the run of filemarks
    c.close()
    _damage(p, c, data_recs[7], "payload")
    _damage(p, c, data_recs[12], "header")
    _damage(p, c, compressed[9], "zstd")
    _damage(p, c, data_recs[70], "payload")  # past the run
    big = [r for r in data_recs if idx.meta[r] >> 16 > 150000 and r not in compressed]
    assert len(big) >= 4  # too big for the span, stored as is: read straight into a buffer
    _damage(p, c, big[1], "payload")
    _damage(p, c, big[2], "header")
    yield from _copies(tmp_path, p)


def _copies(tmp_path: Path, p: Path):
    """The cartridge at ``p`` and a copy of it, open: (reference, native)."""
    q = tmp_path / "B00001L8.vtape"
    for f in tmp_path.iterdir():
        if f.name.startswith("A00001L8"):
            shutil.copy(f, tmp_path / f.name.replace("A00001L8", "B00001L8"))
    ref, nat = TapeCartridge.open(p), TapeCartridge.open(q)
    yield ref, nat
    ref.close()
    nat.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch):
    """How often the C function handed a call to the Python method."""
    calls = {"fallback": 0}

    def fallback(cart: TapeCartridge) -> None:
        calls["fallback"] += 1
        TapeCartridge.read_ahead(cart)

    native.configure_read_ahead(fallback, *_config()[1:])
    yield calls
    native.configure_read_ahead(*_config())


def _config() -> tuple:
    import zstandard

    from tape_formats.read_ahead import SPAN_RECORD_MAX
    from tape_formats.store.medium import PlainMedium
    return (TapeCartridge.read_ahead, zstandard.ZstdError, crc32c.crc32c, SPAN_RECORD_MAX,
            DecryptMode.DECRYPT, PlainMedium)


@pytest.mark.parametrize("crypto", ["none", "plain readable", "decrypt only"])
def test_c_and_python_read_ahead_hold_the_same(twins, counted, crypto: str) -> None:
    ref, nat = twins
    if crypto != "none":  # the drive's encryption settings, without a key
        mode = DecryptMode.DECRYPT if crypto == "decrypt only" else DecryptMode.DISABLE
        for c in twins:
            c.set_crypto(CryptoSettings(decrypt=mode))
    steps = 0
    for own in (True, False):
        ref.rewind()
        nat.rewind()
        while True:
            ref.read_ahead()
            native.read_ahead(nat)
            assert _state(nat) == _state(ref), steps
            ref.read_ahead()  # a second call on a hit changes nothing
            native.read_ahead(nat)
            assert _state(nat) == _state(ref), steps
            a, b = _read(ref, own), _read(nat, own)
            assert a == b, steps
            steps += 1
            if a[0] == RecordKind.EOD:
                break
    assert steps > 80
    # most blocks were the C function's own (the rest: span refills, big records)
    if crypto == "decrypt only":  # plain blocks refused: the Python method's case
        assert counted["fallback"] >= steps, counted
    else:
        assert counted["fallback"] < steps // 4, counted


def test_c_read_ahead_after_moves_and_writes(twins) -> None:
    ref, nat = twins
    rnd = random.Random(3)
    n = len(ref.index)
    for step in range(120):
        what = rnd.random()
        if what < 0.15:
            obj = rnd.randrange(n)
            ref.locate(obj)
            nat.locate(obj)
        elif what < 0.2 and step > 100:  # a write cuts the tape: both the same
            data = rnd.randbytes(rnd.choice([100, 10240, 70000]))
            for c in (ref, nat):
                c.write_block(data)
            n = len(ref.index)
        ref.read_ahead()
        native.read_ahead(nat)
        assert _state(nat) == _state(ref), step
        assert _read(ref, True) == _read(nat, True), step


def test_c_read_ahead_without_configuration_or_with_a_bad_index(twins) -> None:
    ref, nat = twins
    class NotAnIndex:
        objects = 5
        run_rec = ()
        meta = [1, 1, 1, 1, 1]
        offsets = [0, 1, 2, 3, 4]
        end = 5

    nat.index = NotAnIndex()  # type: ignore[assignment]
    with pytest.raises((TypeError, BufferError)):
        native.read_ahead(nat)
    nat.index = ref.index
