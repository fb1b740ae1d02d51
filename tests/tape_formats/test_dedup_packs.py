"""Pack files of the dedup store: chunks appended to packs and indexed, damaged records
found, packs of mostly dead chunks compacted, and stores from before packs (one file per
chunk) still read and collected."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from cartridge_io import read_blocks

from tape_formats.cartridge import TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.store.chunk_index import INDEX_NAME
from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.gc import collect, stats
from tape_formats.store.pack import PACKS_DIR


def _new(tmp_path: Path, barcode: str) -> Path:
    path = tmp_path / "cartridges" / f"{barcode}.vtape"
    path.parent.mkdir(exist_ok=True)
    TapeCartridge.create(path, barcode, MEDIA["LTO-8"], capacity=256 << 20,
                         chunk_store=tmp_path / "store")
    return path


def _blocks(seed: int, n: int, size: int = 100_000) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(n)]


def _write_files(path: Path, files: list[list[bytes]]) -> None:
    with TapeCartridge.open(path) as c:
        c.space_to_eod()
        for blocks in files:
            for b in blocks:
                c.write_block(b)
            c.write_filemarks(1)


def _read_all(path: Path) -> list[bytes]:
    with TapeCartridge.open(path, readonly=True) as c:
        return read_blocks(c)


def test_chunks_go_to_one_pack_and_a_damaged_record_is_an_io_error(tmp_path: Path) -> None:
    a = _new(tmp_path, "P00001L8")
    blocks = _blocks(1, 30)
    _write_files(a, [blocks[:10], blocks[10:]])  # two sync points, one writer: one pack
    store = ChunkStore(tmp_path / "store")
    packs = list(store.pack_files())
    assert len(packs) == 1 and not store.chunks.exists()
    assert _read_all(a) == blocks
    raw = bytearray(packs[0][1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    packs[0][1].write_bytes(raw)
    with pytest.raises(StoreError):
        _read_all(a)


def test_a_pack_of_mostly_dead_chunks_is_compacted(tmp_path: Path) -> None:
    a = _new(tmp_path, "P00001L8")
    keep, drop = _blocks(2, 5), _blocks(3, 20)
    _write_files(a, [keep, drop])  # one pack: a fifth live after the erase below
    with TapeCartridge.open(a) as c:
        c.locate(len(keep) + 1)  # the start of the second file
        c.erase()
    store = ChunkStore(tmp_path / "store")
    before = stats(store, a.parent)
    report = collect(store, a.parent)
    assert report.chunks_freed > 0 and report.packs_compacted == 1
    after = stats(store, a.parent)
    assert after.stored_bytes < before.stored_bytes / 2
    assert after.stored_chunks == after.chunks
    assert _read_all(a) == keep
    assert collect(store, a.parent).packs_compacted == 0  # nothing left to gain


def test_a_store_of_chunk_files_still_reads_and_is_collected(tmp_path: Path) -> None:
    a = _new(tmp_path, "P00001L8")
    blocks = _blocks(4, 12)
    _write_files(a, [blocks])
    store = ChunkStore(tmp_path / "store")
    ids = list(store.ids())
    for cid in ids:  # the layout before packs: one file per chunk, its stored bytes
        path = store.path_of(cid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_stored(cid))
    store.close()
    shutil.rmtree(tmp_path / "store" / PACKS_DIR)
    (tmp_path / "store" / INDEX_NAME).unlink()
    assert _read_all(a) == blocks
    b = _new(tmp_path, "P00002L8")
    _write_files(b, [blocks + _blocks(5, 3)])  # the old chunks are found, not stored again
    old = ChunkStore(tmp_path / "store")
    assert len(list(old.index.rows())) < len(ids)
    a.unlink()  # a deleted cartridge: its chunk files that b does not use are freed
    assert collect(old, a.parent).chunks_freed <= 1  # b uses all but a's last (its cut)
    assert _read_all(b) == blocks + _blocks(5, 3)
    b.unlink()
    assert collect(old, b.parent).chunks_freed > len(ids)
    assert not list(old.ids()) and not list(old.pack_files())
