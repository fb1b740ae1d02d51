"""A dedup cartridge's cut on a thread of its own: the same chunks as one cut of the whole
stream whatever the batches, reads and truncates of a stream still being cut, and the
thread's jobs in order, bounded, with a failure kept."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pyfastcdc
import pytest
from cartridge_io import check_failed_writes_not_acknowledged, read_blocks

from tape_formats.cartridge import TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.store import dedup_medium
from tape_formats.store import recipe as recipes
from tape_formats.store.medium import recipe_path
from tape_formats.store.serial_thread import SerialThread


def _new(tmp_path: Path) -> Path:
    path = tmp_path / "D00001L8.vtape"
    TapeCartridge.create(path, "D00001L8", MEDIA["LTO-8"], capacity=256 << 20,
                         chunk_store=tmp_path / "store")
    return path


def _stream(seed: int) -> list[bytes]:
    """Blocks of every size, text-like and random (cuts at content and at the maximum)."""
    rng = random.Random(seed)
    blocks = []
    for i in range(60):
        n = rng.choice([1, 300, 65_536, 262_144, 1 << 20, 3_000_001])
        blocks.append(rng.randbytes(n) if i % 3 else bytes(rng.choices(b"tape \n", k=n)))
    blocks[20] = rng.randbytes(7 << 20)  # bigger than a stream buffer's room
    return blocks


def _cut_lengths(data: bytes) -> list[int]:
    cdc = pyfastcdc.FastCDC(avg_size=dedup_medium.AVG_CHUNK, min_size=dedup_medium.MIN_CHUNK,
                            max_size=dedup_medium.MAX_CHUNK)
    return [c.length for c in cdc.cut_buf(data)]


@pytest.mark.parametrize("queued", [True, False])
def test_the_chunks_are_one_cut_of_the_whole_stream(tmp_path: Path, queued: bool) -> None:
    path = _new(tmp_path)
    blocks = _stream(1)
    with TapeCartridge.open(path) as c:
        for b in blocks:
            assert (queued and c.queue_block(b)) or c.write_block(b)
        c.write_filemarks(1)
    rec = recipes.load(recipe_path(path))
    assert list(rec.ch_len) == _cut_lengths(b"".join(blocks))
    with TapeCartridge.open(path, readonly=True) as c:
        assert read_blocks(c) == blocks


@pytest.mark.parametrize("stage", ["_cut_batch", "_hash_batch"])
def test_reads_and_a_truncate_while_batches_are_being_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """The cut thread or the hash thread behind: reads, a truncate and the sync point wait
    for both."""
    real = getattr(dedup_medium.DedupMedium, stage)

    def slow(self: dedup_medium.DedupMedium, *args: object, **kw: object) -> None:
        time.sleep(0.05)  # the writer goes on well ahead of the cut
        real(self, *args, **kw)

    monkeypatch.setattr(dedup_medium.DedupMedium, stage, slow)
    path = _new(tmp_path)
    blocks = _stream(2)
    with TapeCartridge.open(path) as c:
        for b in blocks:
            c.write_block(b)
        c.rewind()  # the cut thread settles first: the stream is chunks and one tail
        assert [bytes(c.read_block().data) for _ in range(30)] == blocks[:30]
        for b in _stream(3)[:10]:  # written over from block 30 on: the stream truncated
            c.write_block(b)
        c.write_filemarks(1)
    want = blocks[:30] + _stream(3)[:10]
    with TapeCartridge.open(path, readonly=True) as c:
        assert read_blocks(c) == want
    rec = recipes.load(recipe_path(path))
    assert sum(rec.ch_len) == sum(len(b) for b in want)


@pytest.mark.parametrize("stage", ["_cut_batch", "_hash_batch"])
def test_a_failed_cut_fails_the_later_writes_and_the_sync_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    def broken(self: dedup_medium.DedupMedium, *args: object, **kw: object) -> None:
        raise OSError(5, "cut failed")

    check_failed_writes_not_acknowledged(
        _new(tmp_path), _stream(4)[:5], _stream(5),
        lambda: monkeypatch.setattr(dedup_medium.DedupMedium, stage, broken),
        monkeypatch.undo)


def test_jobs_run_in_order_and_at_most_depth_wait() -> None:
    ran: list[int] = []
    gate = threading.Event()
    most = 0

    def run(n: int) -> None:
        gate.wait()
        ran.append(n)

    worker: SerialThread[int] = SerialThread(run, depth=2, name="test")
    worker.put(0)
    worker.put(1)
    third = threading.Thread(target=worker.put, args=(2,))
    third.start()
    time.sleep(0.05)
    most = len(worker._jobs)
    assert third.is_alive()  # no room: the third waits
    gate.set()
    third.join()
    worker.wait()
    worker.close()
    assert ran == [0, 1, 2] and most == 2


def test_a_failed_job_is_raised_by_every_later_put_and_wait() -> None:
    ran: list[int] = []

    def run(n: int) -> None:
        if n == 1:
            raise ValueError("job 1")
        ran.append(n)

    worker: SerialThread[int] = SerialThread(run, depth=4, name="test")
    for n in range(3):
        try:
            worker.put(n)
        except ValueError:
            break
    with pytest.raises(ValueError):
        worker.wait()
    with pytest.raises(ValueError):
        worker.put(9)
    with pytest.raises(ValueError):
        worker.wait()
    worker.close()
    assert ran == [0]  # the jobs behind the failed one are dropped
