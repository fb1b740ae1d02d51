"""block_runs: the C pack_run/unpack_run (tape_formats/_blockruns.c) against the Python ones,
the reference: the same records, packer state, decoded blocks and stopping points, on
random, text and zero blocks, with the room running out and with damaged records."""

from __future__ import annotations

import random
from array import array

import crc32c
import pytest
import zstandard

from tape_formats import block_runs
from tape_formats.block_packing import BlockPacker
from tape_formats.index import pack_meta
from tape_formats.records import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    RecordKind,
    pack_record_header,
    run_native,
)

native = block_runs._native
pytestmark = pytest.mark.skipif(native is None, reason="tape_formats._blockruns not built")
TEXT = b"".join(b"%05d 2026-12-04 backup wrote /srv/a/%d.log\n" % (i, i * 7) for i in range(9000))


def data_of(rng: random.Random, kind: str, n: int) -> bytes:
    if kind == "random":
        return rng.randbytes(n)
    if kind == "zero":
        return bytes(n)
    if kind == "text":
        at = rng.randrange(len(TEXT) - n)
        return TEXT[at:at + n]
    # mixed: runs of each, so the packer's skip state goes up and down
    return b"".join(data_of(rng, rng.choice(("random", "text", "zero")), n // 8)
                    for _ in range(8)) + bytes(n % 8)


def test_crc32c_matches():
    rng = random.Random(3)
    for n in (0, 1, 7, 8, 9, 28, 32, 511, 512, 4099):
        b = rng.randbytes(n)
        assert native.crc32c(b) == crc32c.crc32c(b)


@pytest.mark.parametrize("kind", ["random", "text", "zero", "mixed"])
@pytest.mark.parametrize("size", [100, 512, 4096])
@pytest.mark.parametrize("compress", [True, False])
def test_pack_run_matches_reference(kind, size, compress):
    rng = random.Random(size)
    packers = [BlockPacker(), BlockPacker()]
    for step in range(6):
        data = memoryview(data_of(rng, kind, size * rng.choice((1, 3, 40, 200))))
        room = rng.choice((1 << 40, size * 7, 10))
        out = [pack(data, size, p, compress, room, 3, 1000 * step, 4096 + step)
               for pack, p in zip((block_runs._pack_run, native.pack_run), packers, strict=True)]
        assert out[0] == out[1]
        assert (packers[0]._misses, packers[0]._skip) == (packers[1]._misses, packers[1]._skip)


def run_of(rng, size, n, kind="mixed"):
    """A run's records as the file holds them, with the index arrays."""
    records, offs, meta, _ = block_runs._pack_run(
        memoryview(data_of(rng, kind, size * n)), size, BlockPacker(), True, 1 << 40, 0, 50,
        1000)
    o, m = array("Q"), array("Q")
    o.frombytes(offs)
    m.frombytes(meta)
    return bytearray(records), o, m


def both_unpack(raw, offsets, meta, size, n, r0=0, obj=50, base=1000):
    dctx = zstandard.ZstdDecompressor()
    end = base + len(raw)
    outs = []
    for unpack in (block_runs._unpack_run, native.unpack_run):
        buf = bytearray(size * n)
        res = unpack(memoryview(bytes(raw)), base, offsets, meta, r0, end, obj, size,
                     memoryview(buf), dctx)
        outs.append((res, bytes(buf[: res[0] * size])))
    assert outs[0] == outs[1]
    return outs[0][0]


@pytest.mark.parametrize("kind", ["random", "text", "mixed"])
def test_unpack_run_matches_reference(kind):
    rng = random.Random(7)
    raw, offsets, meta = run_of(rng, 512, 60, kind)
    assert both_unpack(raw, offsets, meta, 512, 60)[0] == 60
    assert both_unpack(raw, offsets, meta, 512, 25, r0=10, obj=60)[0] == 25
    assert both_unpack(raw, offsets, meta, 512, 25, r0=10, obj=61)[0] == 0  # wrong object
    assert both_unpack(raw[:len(raw) - 5], offsets, meta, 512, 60)[0] == 59  # cut short
    assert both_unpack(raw, offsets, meta, 256, 60)[0] == 0  # another length


def test_unpack_run_stops_where_the_reference_does():
    rng = random.Random(8)
    for trial in range(60):
        raw, offsets, meta = run_of(rng, 512, 30)
        bad = rng.randrange(30)
        what = rng.choice(("header", "payload", "filemark", "encrypted", "length", "zstd"))
        at = offsets[bad] - 1000
        if what == "header":
            raw[at + rng.randrange(32)] ^= 1 << rng.randrange(8)
        elif what == "payload":
            raw[at + 32 + rng.randrange(offsets[bad + 1] - offsets[bad] - 32
                                        if bad + 1 < 30 else 10)] ^= 0x40
        elif what == "filemark":
            meta[bad] = pack_meta(int(RecordKind.FILEMARK), 0, 0)
        elif what == "encrypted":
            meta[bad] |= FLAG_ENCRYPTED << 8
        elif what == "length":
            meta[bad] = pack_meta(int(RecordKind.DATA), 511, (meta[bad] >> 8) & 0xFF)
        elif meta[bad] & (FLAG_COMPRESSED << 8):  # a payload that is not zstd, CRC right
            end = offsets[bad + 1] - 1000 if bad + 1 < 30 else len(raw)
            raw[at + 32:end] = bytes(end - at - 32)
            head = bytearray(raw[at:at + 32])
            head[24:28] = crc32c.crc32c(bytes(end - at - 32)).to_bytes(4, "little")
            head[28:32] = crc32c.crc32c(bytes(head[:28])).to_bytes(4, "little")
            raw[at:at + 32] = head
        else:
            continue
        assert both_unpack(raw, offsets, meta, 512, 30)[0] == bad, (trial, what)


def test_unpack_run_takes_runs_of_blocks_wanted_whole():
    """Records of one block and DATA_RUN records mixed: a run is decoded when all its
    blocks fit in the buffer and its payload holds just them; anything else stops both."""
    rng = random.Random(10)
    cctx = zstandard.ZstdCompressor(level=-1)
    parts, offs, metas, datas = [], array("Q"), array("Q"), []
    off, obj = 1000, 50
    for count, how in ((1, "plain"), (20, "zstd"), (1, "plain"), (7, "raw"), (30, "zstd"),
                       (3, "cut"), (5, "zstd")):
        data = data_of(rng, "text", 512 * count)
        if how == "plain":
            payload, flags, kind, native = data, 0, RecordKind.DATA, 512
        else:
            whole = data + (data_of(rng, "text", 512) if how == "cut" else b"")
            payload = cctx.compress(whole) if how != "raw" else whole
            flags = FLAG_COMPRESSED if how != "raw" else 0
            kind, native = RecordKind.DATA_RUN, run_native(count, 512)
        head = pack_record_header(int(kind), flags, len(payload), native, 0, obj,
                                  crc32c.crc32c(payload))
        parts.append(head + payload)
        offs.append(off)
        metas.append(pack_meta(int(kind), native, flags))
        datas.append(data)
        off += len(head) + len(payload)
        obj += count
    raw = bytearray(b"".join(parts))
    blocks = sum(len(d) for d in datas) // 512
    assert both_unpack(raw, offs, metas, 512, blocks)[0] == 1 + 20 + 1 + 7 + 30  # the cut run
    assert both_unpack(raw, offs, metas, 512, 25)[0] == 22  # the raw run does not fit whole
    assert both_unpack(raw, offs, metas, 512, 10)[0] == 1  # nor the first one
    assert both_unpack(raw, offs, metas, 512, 40, r0=2, obj=71)[0] == 1 + 7 + 30
    assert both_unpack(raw, offs, metas, 256, 40)[0] == 0  # another size
    bad = array("Q", metas)
    bad[1] |= FLAG_ENCRYPTED << 8
    assert both_unpack(raw, offs, bad, 512, 60)[0] == 1
    raw[offs[4] - 1000 + 40] ^= 1  # a run's payload damaged
    assert both_unpack(raw, offs, metas, 512, 60)[0] == 1 + 20 + 1 + 7
