"""The data mover on its own, over real cartridge files: blocking, spanning at early warning
and at end of medium, LOCATE-based reads, encryption, and what a reader reports on damage."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ebm.catalog import Volume
from ebm.crypto import BlockCipher
from ebm.mover import MoverError, TapeReader, TapeWriter
from tape_formats.cartridge import TapeCartridge
from tape_formats.media import MEDIA

BS = 256 * 1024


class Carts:
    """MediaProvider + VolumeOpener over plain cartridge files (no library)."""

    def __init__(self, tmp: Path, capacities: list[int]) -> None:
        self.paths = []
        for i, cap in enumerate(capacities):
            p = tmp / f"M{i:05d}L8.vtape"
            TapeCartridge.create(p, f"M{i:05d}L8", MEDIA["LTO-8"], capacity=cap)
            self.paths.append(p)
        self.next = 0

    def next_volume(self, seq: int):
        if self.next >= len(self.paths):
            raise MoverError("out of cartridges")
        p = self.paths[self.next]
        self.next += 1
        return p.stem, TapeCartridge.open(p)

    def release_volume(self, barcode, cart, *, full: bool) -> None:
        cart.close()

    def open(self, barcode: str):
        return TapeCartridge.open(self.paths[int(barcode[1:6])], readonly=True)

    def close(self, barcode, cart) -> None:
        cart.close()


def _write(carts: Carts, data: bytes, cipher=None, chunk: int = 100_000, threaded=True):
    w = TapeWriter(carts, lambda seq: b"HEADER %d" % seq, cipher=cipher, threaded=threaded)
    w.start()
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])
    size, blocks = w.finish_data()
    vols = [x.volume for x in w.write_trailer(b"TRAILER")]
    return size, blocks, vols


@pytest.mark.parametrize("threaded", [True, False])
def test_blocks_hash_and_random_reads(tmp_path: Path, threaded: bool) -> None:
    carts = Carts(tmp_path, [64 << 20])
    data = os.urandom(5 * BS + 1234)
    size, blocks, vols = _write(carts, data, chunk=77_777, threaded=threaded)
    assert (size, blocks) == (len(data), 6)
    assert vols[0].first_file == 0 and vols[0].last_file == 2 and vols[0].data_object == 2
    r = TapeReader(vols, carts, size)
    r.seek(3 * BS + 10)
    assert r.read(BS) == data[3 * BS + 10:4 * BS + 10]
    assert r.blocks_read == 2  # LOCATEd to block 3, read 3 and 4 only
    r.seek(0)
    assert r.read() == data
    r.close()


def test_span_at_early_warning_and_at_end_of_medium(tmp_path: Path) -> None:
    # 400 KiB: early warning at 300 KiB, so block 1 (256 KiB) does not fit -> end of medium;
    # 1.2 MiB: early warning after the 4th block; the rest fits on the 64 MiB one.
    carts = Carts(tmp_path, [400 << 10, 1200 << 10, 64 << 20])
    data = os.urandom(9 * BS + 5)
    size, blocks, vols = _write(carts, data)
    assert [v.barcode for v in vols] == ["M00000L8", "M00001L8", "M00002L8"]
    assert vols[0].first_block == 0 and vols[0].last_block == 0
    assert all(b.first_block == a.last_block + 1 for a, b in zip(vols, vols[1:], strict=False))
    assert vols[-1].last_block == blocks - 1 == 9
    r = TapeReader(vols, carts, size)
    assert r.read() == data
    r.seek(5 * BS)  # a block on the third cartridge, straight away
    before = r.blocks_read
    assert r.read(10) == data[5 * BS:5 * BS + 10] and r.blocks_read == before + 1
    r.close()


def test_encrypted_blocks_and_corruption_is_named(tmp_path: Path) -> None:
    carts = Carts(tmp_path, [64 << 20])
    c = BlockCipher.new(b"pw", "u-1")
    data = b"compressible " * 100_000
    size, _, vols = _write(carts, data, cipher=c)
    raw = carts.paths[0].read_bytes()
    assert b"compressible" not in raw
    assert len(raw) < len(data) // 5  # zstd before AES: encryption keeps compression
    r = TapeReader(vols, carts, size, BlockCipher.open(b"pw", "u-1", c.params))
    assert r.read() == data
    r.close()
    with open(carts.paths[0], "r+b") as f:  # damage the middle of the data tape file
        f.seek(len(raw) // 2)
        f.write(b"\xff" * 64)
    r = TapeReader(vols, carts, size, BlockCipher.open(b"pw", "u-1", c.params))
    with pytest.raises(MoverError, match=r"cartridge M00000L8 file 1 block \d+ is corrupt"):
        r.read()
    r.close()


def test_reader_refuses_blocks_no_volume_holds(tmp_path: Path) -> None:
    carts = Carts(tmp_path, [64 << 20])
    size, _, vols = _write(carts, os.urandom(BS))
    fake = [Volume(0, 0, "M00000L8", 0, 2, 0, 5, vols[0].data_object, 0, 0)]
    r = TapeReader(fake, carts, 3 * BS)
    r.seek(2 * BS)
    with pytest.raises(MoverError, match="block 2 of the backup is on no recorded cartridge"):
        r.read(1)
    r.close()


def _pax_entries(w) -> None:
    from tape_formats.archive import ArchiveEntry

    w.add(ArchiveEntry("d", "dir", mode=0o755, mtime_ns=1), b"")
    w.add(ArchiveEntry("d/a", "file", size=300_000, mtime_ns=2), os.urandom(300_000))
    w.add(ArchiveEntry("d/h", "hardlink", linkname="d/a"), b"")
    w.close()


def test_manager_pax_writer_digest_is_the_streams(tmp_path: Path) -> None:
    """The manager's PaxWriter writes the same stream as a stock one, and its member digest
    is what a reader recomputes from the stream the mover put on tape."""
    import io

    from ebm.manager import _pax_writer
    from tape_formats.archive import PaxReader, PaxWriter

    carts = Carts(tmp_path, [64 << 20])
    w = TapeWriter(carts, lambda seq: b"HEADER %d" % seq)
    w.start()
    pax = _pax_writer(w)
    assert isinstance(pax, PaxWriter)
    _pax_entries(pax)
    size, _ = w.finish_data()
    vols = [x.volume for x in w.write_trailer(b"TRAILER")]
    r = TapeReader(vols, carts, size)
    stream = r.read()
    r.close()
    reader = PaxReader(io.BytesIO(stream), stream_digest=True)
    assert len(list(reader)) == 3 and reader.digest is not None
    assert size == pax.bytes_written == len(stream)
    assert pax.stream_digest() == reader.digest.hexdigest() != hashlib.sha256(stream).hexdigest()
    ref = io.BytesIO()
    _pax_entries(PaxWriter(ref))
    assert len(ref.getvalue()) == len(stream)  # same layout (file data differs: random)


def test_trailer_keeps_every_index_field() -> None:
    """trailer_bytes uses the archive's own IndexEntry.to_json: every field the EBM relies on
    (sha256, deletions, link targets, torn marks) survives the trailer round trip."""
    import uuid

    from ebm.backup_labels import parse_trailer, trailer_bytes
    from tape_formats.archive import IndexEntry

    entries = [
        IndexEntry(path="f", kind="file", size=7, mtime_ns=1_700_000_000_123_456_789, mode=0o640,
                   uid=1000, gid=100, sha256="ab" * 32, header_offset=0, data_offset=1024),
        IndexEntry(path="h", kind="hardlink", linkname="f", header_offset=1536, data_offset=2048),
        IndexEntry(path="s", kind="symlink", linkname="f", header_offset=2048, data_offset=2560),
        IndexEntry(path="t", kind="file", size=3, torn=True, header_offset=2560, data_offset=3072),
        IndexEntry(path="gone", kind="file", deleted=True, header_offset=3584, data_offset=3584),
    ]
    u = str(uuid.uuid4())
    info = parse_trailer(trailer_bytes(uuid=u, entries=entries, size=4096, digest="cd" * 32,
                                       warnings=["w"], extra={"state": None, "blocks": 1}))
    assert info is not None and str(info.backup_uuid) == u
    assert info.index == entries
    assert (info.entry_count, info.deleted_count, info.torn_count) == (4, 1, 1)
    assert info.extra["blocks"] == 1 and info.warnings == ["w"]


def test_a_queued_blocks_disk_error_fails_the_stream(tmp_path: Path, monkeypatch) -> None:
    """Data blocks go through the cartridge's write buffer; a disk error there (raised
    behind the mover's back) still stops the backup with a MoverError naming the cartridge."""
    carts = Carts(tmp_path, [64 << 20])
    w = TapeWriter(carts, lambda seq: b"HEADER %d" % seq)
    w.start()
    cart = w.volumes[0].cart
    real, stored = cart._store_packed, []

    def failing(native, packed):
        stored.append(native)
        if len(stored) == 4:  # the header, the first data block, then two queued ones
            raise OSError(5, "Input/output error")
        return real(native, packed)

    monkeypatch.setattr(cart, "_store_packed", failing)
    with pytest.raises(MoverError, match="cartridge M00000L8: .*Input/output error"):
        for _ in range(12):
            w.write(os.urandom(BS))
        w.finish_data()
    w.abort()
