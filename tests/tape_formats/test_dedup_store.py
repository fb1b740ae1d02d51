"""The dedup store under a cartridge: data stored once per library, read back exactly,
freed by the collector when no cartridge references it, damage reported as an I/O error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tape_formats.cartridge import RecordKind, TapeCartridge, verify_cartridge
from tape_formats.index import PositionIndex
from tape_formats.media import MEDIA
from tape_formats.records import HEADER_SIZE, RECORD_HEADER_SIZE
from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.gc import collect, stats
from tape_formats.store.medium import recipe_path


def _blocks(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, 200_000)) for _ in range(n)]


def _new(tmp_path: Path, barcode: str) -> Path:
    carts = tmp_path / "cartridges"
    carts.mkdir(exist_ok=True)
    path = carts / f"{barcode}.vtape"
    TapeCartridge.create(path, barcode, MEDIA["LTO-8"], capacity=64 << 20,
                         chunk_store=tmp_path / "store")
    return path


def _write(path: Path, blocks: list[bytes]) -> None:
    with TapeCartridge.open(path) as c:
        for b in blocks:
            c.write_block(b)
        c.write_filemarks(1)


def _read_all(path: Path) -> list[bytes]:
    out = []
    with TapeCartridge.open(path, readonly=True) as c:
        while (r := c.read_block()).kind is not RecordKind.EOD:
            if r.kind is RecordKind.DATA:
                out.append(bytes(r.data))
    return out


def test_two_cartridges_of_the_same_data_store_it_once(tmp_path: Path) -> None:
    blocks = _blocks(1, 30)
    a, b = _new(tmp_path, "D00001L8"), _new(tmp_path, "D00002L8")
    _write(a, blocks)
    _write(b, blocks)
    assert _read_all(a) == blocks and _read_all(b) == blocks
    assert verify_cartridge(a).ok and verify_cartridge(b).ok
    s = stats(ChunkStore(tmp_path / "store"), tmp_path / "cartridges")
    assert s.logical_bytes == 2 * sum(map(len, blocks))
    assert s.dedup_ratio > 1.9
    # the skeleton holds the header and the record headers only, back to back
    assert a.stat().st_size == HEADER_SIZE + RECORD_HEADER_SIZE * (len(blocks) + 1)


def test_overwrite_and_collect_frees_only_unreferenced(tmp_path: Path) -> None:
    a, b = _new(tmp_path, "D00001L8"), _new(tmp_path, "D00002L8")
    first, second = _blocks(2, 20), _blocks(3, 20)
    _write(a, first)
    _write(b, second)
    store = ChunkStore(tmp_path / "store")
    with TapeCartridge.open(a) as c:  # overwrite from block 5: the rest of `first` is freed
        c.locate(5)
        c.write_block(b"new")
        c.write_filemarks(1)
    report = collect(store, tmp_path / "cartridges")
    assert report.chunks_freed > 0
    assert _read_all(a) == [*first[:5], b"new"]
    assert _read_all(b) == second
    b.unlink()  # a deleted cartridge references nothing
    recipe_path(b).unlink()
    assert collect(store, tmp_path / "cartridges").chunks_freed > 0
    assert _read_all(a) == [*first[:5], b"new"]
    assert collect(store, tmp_path / "cartridges").chunks_freed == 0


def test_a_torn_recipe_batch_ends_the_tape_at_the_previous_sync(tmp_path: Path) -> None:
    a = _new(tmp_path, "D00001L8")
    blocks = _blocks(4, 6)
    _write(a, blocks[:3])
    _write(a, [])  # reopen at BOP: overwrite, then keep the first three again
    _write(a, blocks[:3])
    good = recipe_path(a).stat().st_size
    with TapeCartridge.open(a) as c:
        c.space_to_eod()
        for blk in blocks[3:]:
            c.write_block(blk)
        c.write_filemarks(1)
    with open(recipe_path(a), "r+b") as f:  # the last batch only half made it
        f.truncate(good + 20)
    # ... so the crash came before the index sidecar (written after the recipe) was updated
    PositionIndex.sidecar(a).unlink()
    assert _read_all(a) == blocks[:3]
    with TapeCartridge.open(a) as c:  # a read-write open cuts the torn tail for good
        assert c.eod == 4


def test_a_missing_chunk_is_an_io_error(tmp_path: Path) -> None:
    a = _new(tmp_path, "D00001L8")
    _write(a, _blocks(5, 3))
    store = ChunkStore(tmp_path / "store")
    store.discard(list(store.ids()))
    with TapeCartridge.open(a, readonly=True) as c, pytest.raises(StoreError):
        c.read_block()
    report = verify_cartridge(a)  # verify reads through the store too
    assert not report.ok and "missing" in report.errors[0]


def test_blocks_are_stored_as_they_are_and_compressed_per_chunk(tmp_path: Path) -> None:
    a = _new(tmp_path, "D00001L8")
    text = b"the same line of text again and again\n" * 20_000
    _write(a, [text])
    with TapeCartridge.open(a, readonly=True) as c:
        assert c.used_bytes > len(text)  # capacity counts logical bytes, as dedup VTLs do
    s = stats(ChunkStore(tmp_path / "store"), tmp_path / "cartridges")
    assert s.compression_ratio > 5


def test_a_dedup_cartridge_streams_without_a_packer_or_pacer_thread(tmp_path: Path) -> None:
    """A dedup medium compresses per chunk, so the drive's write buffer only checksums its
    blocks: one thread stores them (no helper packer and its hand-offs); and its file is the
    skeleton, so the cartridge's write-back pacer stays idle (the chunk store paces its
    packs). The blocks read back as queued; a plain cartridge keeps both."""
    blocks = _blocks(11, 100)  # ~10 MB: past the pacer's first write-out
    plain = tmp_path / "P00001L8.vtape"
    TapeCartridge.create(plain, "P00001L8", MEDIA["LTO-8"], capacity=64 << 20)
    for path, threads, paced in ((_new(tmp_path, "D00002L8"), 1, False), (plain, 2, True)):
        with TapeCartridge.open(path) as c:
            for b in blocks:
                assert c.queue_block(b)
            assert c._wb is not None and len(c._wb._threads) == threads
            c.flush_writes()
            c.write_filemarks(1)
            assert (c._pacer.background._thread is not None) == paced
        assert _read_all(path) == blocks
