"""Pack files of the dedup store: chunks appended to packs and indexed, damaged records
found, packs of mostly dead chunks compacted, small packs merged, and stores from before packs (one file per
chunk) still read and collected."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
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


def test_small_packs_of_short_sessions_are_merged(tmp_path: Path) -> None:
    a = _new(tmp_path, "P00001L8")
    sessions = [_blocks(10 + i, 4) for i in range(4)]
    for blocks in sessions:  # each session's writer closes its own small pack
        _write_files(a, [blocks])
    store = ChunkStore(tmp_path / "store")
    assert len(list(store.pack_files())) == 4
    report = collect(store, a.parent)
    assert (report.packs_merged, report.packs_compacted, report.chunks_freed) == (4, 4, 0)
    assert len(list(store.pack_files())) == 1
    assert _read_all(a) == [b for blocks in sessions for b in blocks]
    assert collect(store, a.parent).packs_merged == 0  # one small pack stays as it is
    store.close()


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


# The collector, stopped for good at one step of a compaction (a SIGKILL there).
KILLED_COLLECTOR = r"""
import sys, time
from pathlib import Path
from tape_formats.store import gc
from tape_formats.store.chunk_store import ChunkStore
stage = sys.argv[3]
def stop_here(*args, **kwargs):
    print(stage, flush=True)
    time.sleep(600)
if stage == "before-move":  # the new pack is written and synced, the rows not moved
    gc.ChunkStore.sync_folder = stop_here
else:  # "before-unlink": the rows point at the new pack, the old one is still there
    import tape_formats.store.chunk_index as ci
    move = ci.ChunkIndex.move
    def move_then_stop(self, rows):
        move(self, rows)
        stop_here()
    ci.ChunkIndex.move = move_then_stop
gc.collect(ChunkStore(Path(sys.argv[1])), Path(sys.argv[2]))
"""


@pytest.mark.parametrize("stage", ["before-move", "before-unlink"])
def test_a_collector_killed_inside_a_compaction_loses_nothing(tmp_path: Path,
                                                              stage: str) -> None:
    a = _new(tmp_path, "P00001L8")
    keep, drop = _blocks(6, 5), _blocks(7, 20)
    _write_files(a, [keep, drop])
    with TapeCartridge.open(a) as c:
        c.locate(len(keep) + 1)
        c.erase()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_COLLECTOR, str(tmp_path / "store"),
                             str(a.parent), stage], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().decode().strip() == stage
    finally:
        proc.kill()
        proc.wait()
    assert _read_all(a) == keep
    store = ChunkStore(tmp_path / "store")
    assert len(list(store.pack_files())) == 2  # the old pack and the new one, both whole
    collect(store, a.parent)  # the next run removes whichever no row points into
    s = stats(store, a.parent)
    assert s.packs == 1 and s.stored_chunks == s.chunks
    assert _read_all(a) == keep


def test_a_batch_is_written_in_pieces_of_at_most_write_max(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Big writes take big page-cache folios, slow to fill on this machine kind (pack.py):
    a batch goes to the pack in writes of WRITE_MAX bytes at most, a body bigger than that
    split across them, and reads back as the records it was."""
    from tape_formats.store import pack as packs

    sizes: list[int] = []
    real = os.pwritev

    def pwritev(fd: int, bufs: list, offset: int) -> int:
        sizes.append(sum(len(b) for b in bufs))
        return real(fd, bufs, offset)

    monkeypatch.setattr(packs.os, "pwritev", pwritev)
    rng = random.Random(5)
    bodies = [rng.randbytes(n) for n in (100, packs.WRITE_MAX + 3, 70_000, 3 * packs.WRITE_MAX,
                                         1, 200_000)]
    folder = tmp_path / "packs"
    folder.mkdir()
    writer = packs.PackWriter(folder)
    recs = [(bytes([i]) * 32, packs.RAW, memoryview(b)) for i, b in enumerate(bodies)]
    offsets = writer.append_many(recs)
    writer.close()
    assert max(sizes) == packs.WRITE_MAX
    assert sum(sizes) == sum(packs.record_size(len(b)) for b in bodies)
    data = next(folder.iterdir()).read_bytes()
    assert [at for at, _cid, _size in packs.records(data)] == offsets
    for (cid, _flag, body), at in zip(recs, offsets, strict=True):
        assert packs.decode(data, at, cid)[1] == body


def test_the_background_flush_indexes_what_it_made_durable(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """While chunks stream in, the store's background thread starts the packs' write-out
    every WRITE_OUT_BYTES and, every BACKGROUND_SYNC_BYTES, fdatasyncs them (the packs
    folder too for a new pack), then commits the rows of the records written before that
    flush: the sync point indexes only the rest. A row is never committed before its pack's
    flush; the S3 cache's cue (``synced``) still comes at the sync point."""
    from tape_formats.store import chunk_store as cs
    from tape_formats.store import pack as packs

    monkeypatch.setattr(cs, "BACKGROUND_SYNC_BYTES", 400_000)
    monkeypatch.setattr(cs, "WRITE_OUT_BYTES", 150_000)
    monkeypatch.setattr(packs, "PACK_SIZE", 1 << 20)
    events: list[tuple[str, object]] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        events.append(("fdatasync", fd))
        real_fdatasync(fd)

    def write_out(fd: int, offset: int, length: int) -> None:
        events.append(("write_out", fd))

    monkeypatch.setattr(cs.os, "fdatasync", fdatasync)
    monkeypatch.setattr(cs, "start_write_out", write_out)
    ChunkStore.create(tmp_path / "store")
    store = ChunkStore(tmp_path / "store")
    real_add = store.index.add

    def add(rows: object) -> None:
        rows = list(rows)  # type: ignore[call-overload]
        events.append(("add", len(rows)))
        real_add(rows)

    store.index.add = add  # type: ignore[method-assign]
    cues: list[int] = []

    class Remote:
        def synced(self, _store: ChunkStore) -> None:
            cues.append(1)

    store.remote = Remote()  # type: ignore[assignment]
    rng = random.Random(9)
    ids = []
    for n in range(40):
        cid = bytes([n]) * 32
        ids.append(cid)
        store.append_many([(cid, packs.RAW, rng.randbytes(50_000))])
    assert store._background is not None
    store._background.wait()
    committed = sum(n for kind, n in events if kind == "add")
    assert 8 <= committed <= 40  # rows indexed behind the writer's back (a flush asked for
    # while one runs is dropped: the next one, or the sync point, takes its rows)
    assert any(kind == "write_out" for kind, _ in events)
    first_add = next(i for i, (kind, _) in enumerate(events) if kind == "add")
    assert any(kind == "fdatasync" for kind, _ in events[:first_add])
    assert len(store.index.lookup(ids)) == committed
    assert not cues
    store.sync()
    assert sum(n for kind, n in events if kind == "add") == 40
    assert len(store.index.lookup(ids)) == 40 and cues == [1]
    store.sync()  # nothing new: no rows, no cue
    assert cues == [1]
    store.close()
    reopened = ChunkStore(tmp_path / "store")
    assert len(reopened.get(ids[7], 50_000, zstandard.ZstdDecompressor())) == 50_000
    reopened.close()


def test_a_flush_skips_the_packs_an_earlier_one_made_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The background flushes and the sync point fdatasync only packs with bytes past what
    an earlier flush made durable: a full pack is not flushed again by each later flush
    until the sync point (each fdatasync is a disk cache flush), so a round flushes the pack
    it left open and those begun since, and every pack is durable at the sync point."""
    from tape_formats.store import chunk_store as cs
    from tape_formats.store import pack as packs

    monkeypatch.setattr(cs, "BACKGROUND_SYNC_BYTES", 150_000)
    monkeypatch.setattr(packs, "PACK_SIZE", 200_000)
    flushed: dict[int, int] = {}  # inode -> size at its last fdatasync
    calls = rounds = 0
    real_fdatasync, real_round = os.fdatasync, cs.ChunkStore._flush_packs

    def fdatasync(fd: int) -> None:
        nonlocal calls
        calls += 1
        st = os.fstat(fd)
        real_fdatasync(fd)
        flushed[st.st_ino] = st.st_size

    def flush_round(self: ChunkStore, writers: list) -> None:
        nonlocal rounds
        rounds += 1
        real_round(self, writers)

    monkeypatch.setattr(cs.os, "fdatasync", fdatasync)
    monkeypatch.setattr(cs.ChunkStore, "_flush_packs", flush_round)
    ChunkStore.create(tmp_path / "store")
    store = ChunkStore(tmp_path / "store")
    rng = random.Random(5)
    for n in range(40):
        store.append_many([(bytes([n]) * 32, packs.RAW, rng.randbytes(50_000))])
        if store._background is not None:  # (each flush asked for runs: none is dropped)
            store._background.wait()
    store.sync()
    pack_files = list((tmp_path / "store" / PACKS_DIR).iterdir())
    assert len(pack_files) >= 8 and rounds >= 10
    assert calls <= rounds + len(pack_files)  # (before: every finished pack each round)
    assert sorted(flushed.values()) == sorted(f.stat().st_size for f in pack_files)
    store.close()


def test_the_index_takes_many_rows_in_few_statements(tmp_path: Path) -> None:
    """``ChunkIndex.add`` inserts ``_INSERT_BATCH`` rows a statement, in one transaction:
    every row lands, an id given twice keeps its first row, one already there its old row."""
    from tape_formats.store import chunk_index as ci

    index = ci.ChunkIndex(tmp_path)
    index.add([(b"\x01" * 32, ci.Location(9, 9, 9))])
    n = 2 * ci._INSERT_BATCH + 7
    rows = [(i.to_bytes(32, "big"), ci.Location(1, i, 100 + i)) for i in range(2, n)]
    rows.insert(ci._INSERT_BATCH, (rows[3][0], ci.Location(2, 0, 0)))  # twice: the first wins
    rows.append((b"\x01" * 32, ci.Location(3, 3, 3)))  # already there: kept as it was
    index.add(rows)
    found = index.lookup([cid for cid, _loc in rows])
    assert len(found) == n - 1
    assert found[rows[3][0]] == ci.Location(1, 5, 105)
    assert found[b"\x01" * 32] == ci.Location(9, 9, 9)
    assert all(found[cid] == loc for cid, loc in rows[:ci._INSERT_BATCH])
    index.close()
