"""The dedup write pipeline: chunks stored behind the writer's back, in order, once each; a
pack write that fails is reported at the sync point, never acknowledged as durable."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
import zstandard
from cartridge_io import check_failed_writes_not_acknowledged

from tape_formats.cartridge import TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.store import pack as packs
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.chunk_writer import ChunkWriter


def _new(tmp_path: Path) -> Path:
    path = tmp_path / "D00001L8.vtape"
    TapeCartridge.create(path, "D00001L8", MEDIA["LTO-8"], capacity=64 << 20,
                         chunk_store=tmp_path / "store")
    return path


def _blocks(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)  # half random, half text-like: some chunks compress, some not
    return [rng.randbytes(100_000) if i % 2 else bytes(rng.choices(b"tape ", k=100_000))
            for i in range(n)]


def test_a_chunk_twice_in_flight_is_stored_once(tmp_path: Path) -> None:
    store = ChunkStore.create(tmp_path / "store")
    writer = ChunkWriter(store)
    piece = memoryview(random.Random(1).randbytes(50_000))
    cid = bytes(32)
    writer.submit([cid, cid], [piece, piece])
    writer.submit([cid], [piece])
    writer.drain()
    store.sync()
    writer.close()
    (pack,) = store.packs.iterdir()
    assert pack.stat().st_size == packs.record_size(50_000)  # raw: it does not compress
    assert store.get(cid, 50_000, zstandard.ZstdDecompressor()) == piece
    store.close()


def test_blocks_read_back_while_chunks_are_in_flight(tmp_path: Path) -> None:
    path = _new(tmp_path)
    blocks = _blocks(2, 40)
    blocks[7] = random.Random(5).randbytes(6 << 20)  # bigger than a stream buffer
    with TapeCartridge.open(path) as c:
        for b in blocks:
            assert c.queue_block(b) or c.write_block(b)
        c.flush_writes()
        c.rewind()  # reads drain the chunk writer first
        got = [bytes(c.read_block().data) for _ in blocks]
    assert got == blocks


@pytest.fixture
def appended(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The chunk ids ChunkStore.append_many is given, in order."""
    ids: list[bytes] = []
    real = ChunkStore.append_many

    def record(self: ChunkStore, records: list) -> int:
        ids.extend(rec[0] for rec in records)
        return real(self, records)

    monkeypatch.setattr(ChunkStore, "append_many", record)
    return ids


def test_a_failed_pack_write_is_not_acknowledged(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    check_failed_writes_not_acknowledged(
        _new(tmp_path), _blocks(3, 12), _blocks(4, 30),
        lambda: monkeypatch.setattr(ChunkStore, "append_many", full), monkeypatch.undo)


def test_batches_compressed_out_of_order_are_appended_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, appended: list[bytes]) -> None:
    import threading
    import time

    store = ChunkStore.create(tmp_path / "store")

    class SlowFirst:  # the first batch compresses last: later ones wait for its turn
        def multi_compress_to_buffer(self, pieces: list[memoryview], threads: int) -> list:
            if pieces[0][0] == 0:
                time.sleep(0.2)
            return [bytes(piece) for piece in pieces]  # "does not shrink": stored raw

    monkeypatch.setattr(ChunkWriter, "_compressor", lambda self: SlowFirst())
    writer = ChunkWriter(store)
    done: list[int] = []
    lock = threading.Lock()
    ids = [bytes([n]) * 32 for n in range(5)]
    for n, cid in enumerate(ids):
        def finished(n: int = n) -> None:
            with lock:
                done.append(n)
        writer.submit([cid], [memoryview(bytes([n]) * 1000)], finished)
    writer.drain()
    writer.close()
    assert appended == ids
    assert sorted(done) == list(range(5))
    store.sync()
    assert all(store.has(cid) for cid in ids)
    store.close()


def test_after_incompressible_chunks_some_are_stored_raw_untried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tape_formats.store import chunk_writer

    store = ChunkStore.create(tmp_path / "store")
    writer = ChunkWriter(store, threads=1)
    tried: list[int] = []
    real = writer._compressor()

    class Counting:
        def multi_compress_to_buffer(self, pieces: list[memoryview], threads: int) -> list:
            tried.extend(piece[0] for piece in pieces)
            return [real.compress(piece) for piece in pieces]

    monkeypatch.setattr(writer, "_compressor", lambda: Counting())
    rng = random.Random(9)
    n = chunk_writer.MISSES_BEFORE_SKIP + chunk_writer.SKIP_CHUNKS + 2
    pieces = [memoryview(bytes([i]) + rng.randbytes(20_000)) for i in range(n)]
    text = memoryview(bytes([n]) + b"compressible " * 2000)
    writer.submit([bytes([i]) * 32 for i in range(n + 1)], [*pieces, text])
    writer.drain()
    store.sync()
    writer.close()
    skipped = set(range(chunk_writer.MISSES_BEFORE_SKIP,
                        chunk_writer.MISSES_BEFORE_SKIP + chunk_writer.SKIP_CHUNKS))
    assert tried == [i for i in range(n + 1) if i not in skipped]  # then tried again
    dctx = zstandard.ZstdDecompressor()
    for i, piece in enumerate([*pieces, text]):
        assert store.get(bytes([i]) * 32, len(piece), dctx) == piece
    store.close()


def test_a_sync_points_last_batch_is_compressed_by_every_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, appended: list[bytes]) -> None:
    import threading

    store = ChunkStore.create(tmp_path / "store")
    names: set[str] = set()
    both = threading.Barrier(2, timeout=10)  # each share waits for the other's thread

    class Meeting:
        def multi_compress_to_buffer(self, pieces: list[memoryview], threads: int) -> list:
            names.add(threading.current_thread().name)
            both.wait()
            return [bytes(piece) for piece in pieces]  # stored raw

    monkeypatch.setattr(ChunkWriter, "_compressor", lambda self: Meeting())
    writer = ChunkWriter(store, threads=2)
    done: list[int] = []
    ids = [bytes([n]) * 32 for n in range(5)]
    pieces = [memoryview(bytes([n]) * 1000) for n in range(5)]
    writer.submit([*ids, ids[0]], [*pieces, pieces[0]], lambda: done.append(len(appended)),
                  last=True)
    writer.drain()
    writer.close()
    assert len(names) == 2
    assert appended == ids  # in order, once each
    assert done == [5]  # once, after every share was appended
    store.sync()
    dctx = zstandard.ZstdDecompressor()
    for cid, piece in zip(ids, pieces, strict=True):
        assert store.get(cid, len(piece), dctx) == piece
    store.close()
