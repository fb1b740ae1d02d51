"""Buffered mode: WRITE(6) answered once the block is in the drive's buffer, stored behind.

What an initiator sees must be what an unbuffered drive shows, except when the disk fails
under a buffered block: then the next command gets a deferred error (sense 0x71) that counts
the blocks lost, and the tape ends after the last block stored.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from test_ssc import A, B, MiB, check, good, pos, read, rewind, run, wfm, write

from tape_formats import write_behind
from tape_formats.cartridge import TapeCartridge
from tape_formats.write_behind import DeferredWriteError, WriteBehind
from vtl.library import Library
from vtl.scsi import ssc
from vtl.scsi.base import DonatedBuffer, SenseKey, Status
from vtl.scsi.ssc import TapeDrive

BLOCK = 64 * 1024


# ---- the buffer on its own ---------------------------------------------------------------
def _identity_packer():
    return lambda data, compress: data


def test_blocks_are_stored_in_order_and_a_failure_drops_the_rest_once():
    stored: list[bytes] = []
    gate = threading.Event()

    def append(native, packed):
        gate.wait(5)
        if packed == b"bad":
            raise OSError(errno.EIO, "disk on fire")
        stored.append(bytes(packed))

    wb = WriteBehind(_identity_packer, append, limit=1 << 20, name="t")
    end = lambda: 0  # noqa: E731 - the medium offset after what is stored
    for item in (b"a", b"b", b"bad", b"c", b"d"):
        assert wb.put(item, False, 100, end, 1 << 30)
    gate.set()
    with pytest.raises(DeferredWriteError) as exc:
        wb.flush()
    assert stored == [b"a", b"b"]
    assert exc.value.lost == 3 and exc.value.lost_bytes == 5
    assert isinstance(exc.value.cause, OSError)
    wb.flush()  # reported once
    assert wb.put(b"e", False, 100, end, 1 << 30)
    assert wb.close() is None and stored[-1] == b"e"


def test_packers_work_in_parallel_and_blocks_are_appended_in_order():
    """Blocks that take the packers different times still reach the tape in the order they
    were accepted; when they pile up, the second packer takes its share."""
    rnd = random.Random(1)
    delays = {i: rnd.choice([0, 0.002, 0.01]) for i in range(200)}
    packed_by: dict[int, str] = {}

    def new_packer():
        def pack(data, compress):
            n = int(bytes(data))
            time.sleep(delays[n])
            packed_by[n] = threading.current_thread().name
            return n

        return pack

    stored: list[int] = []
    wb = WriteBehind(new_packer, lambda native, n: stored.append(n), limit=50 * 10,
                     name="t", packers=2)
    for i in range(200):
        assert wb.put(b"%d" % i, True, 10, lambda: 0, 1 << 30)
    assert wb.close() is None
    assert stored == list(range(200))
    assert len(set(packed_by.values())) == 2


def test_a_lazy_block_is_stored_by_its_caller_or_by_the_buffer_once_waited_for(monkeypatch):
    """``put(lazy=True)`` wakes no thread: ``store_here`` stores it on the calling thread,
    a ``wait`` has the storing thread store it, and one nobody stores is taken by the
    storing thread after LAZY_WAIT. A run (``run``) is appended unpacked, with its data."""
    by: list[tuple[str, object]] = []

    def append(native, packed, data=None):
        by.append((threading.current_thread().name, packed if data is None else (packed, data)))

    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)  # no wake-up in the middle
    wb = WriteBehind(_identity_packer, append, limit=1 << 20, name="t")
    end = lambda: 0  # noqa: E731
    _until_idle(wb)
    assert wb.put(b"a", False, 100, end, 1 << 30, lazy=True)
    assert wb.put(b"bc", False, 100, end, 1 << 30, run=(1, "run"), count=2, lazy=True)
    assert wb.blocks == 2
    assert wb.store_here()
    me = threading.current_thread().name
    assert by == [(me, b"a"), (me, ((1, "run"), b"bc"))] and wb.blocks == 0
    assert not wb.store_here()  # nothing queued
    assert wb.put(b"d", False, 100, end, 1 << 30, lazy=True)
    wb.wait()
    assert by[-1] == ("write-behind t", b"d")
    assert wb.close() is None
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 0.05)
    wb = WriteBehind(_identity_packer, append, limit=1 << 20, name="u")
    assert wb.put(b"e", False, 100, end, 1 << 30, lazy=True)
    deadline = time.monotonic() + 5
    while wb.blocks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert by[-1] == ("write-behind u", b"e")  # nobody stored it: the storing thread did
    assert wb.close() is None


def _switches(thread: threading.Thread) -> int:
    """The thread's context switches so far (each wake-up from a wait is one)."""
    status = open(f"/proc/self/task/{thread.native_id}/status").read().splitlines()
    return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_an_idle_buffer_wakes_no_thread_and_still_stores_an_unattended_lazy_block(
        monkeypatch):
    """After one LAZY_WAIT with nothing queued the storing thread sleeps with no timeout (no
    polling: zero wake-ups while idle); a lazy block put then starts its timer, and nobody
    storing it, the storing thread does after LAZY_WAIT. A ``wait`` right after a lazy put
    does not wait for that timer."""
    by: list[str] = []
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 0.02)
    wb = WriteBehind(_identity_packer, lambda native, packed: by.append(
        threading.current_thread().name), limit=1 << 20, name="t")
    end = lambda: 0  # noqa: E731
    assert wb.put(b"a", False, 100, end, 1 << 30, lazy=True)
    assert wb.store_here()
    _until_asleep(wb)
    storer = wb._threads[0]
    before = _switches(storer)
    time.sleep(0.3)  # 15 LAZY_WAITs
    assert _switches(storer) == before
    assert wb.put(b"b", False, 100, end, 1 << 30, lazy=True)  # nobody stores it
    deadline = time.monotonic() + 5
    while wb.blocks and time.monotonic() < deadline:
        time.sleep(0.005)
    assert by == [threading.current_thread().name, "write-behind t"]
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)
    _until_asleep(wb)
    t0 = time.monotonic()
    assert wb.put(b"c", False, 100, end, 1 << 30, lazy=True)
    wb.wait()
    assert time.monotonic() - t0 < 10 and by[-1] == "write-behind t"
    assert wb.close() is None


def test_a_put_waiting_for_room_has_the_lazy_blocks_stored(monkeypatch):
    """A buffer full of lazy blocks nobody stored: the put that waits for room wakes the
    storing thread (as ``wait`` does), not LAZY_WAIT later."""
    stored: list[bytes] = []
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)
    wb = WriteBehind(_identity_packer, lambda native, packed: stored.append(packed),
                     limit=250, name="t")
    end = lambda: 0  # noqa: E731
    t0 = time.monotonic()
    for data in (b"a", b"b", b"c", b"d"):  # two fit: the third put waits for room
        assert wb.put(data, False, 100, end, 1 << 30, lazy=True)
    assert time.monotonic() - t0 < 10
    wb.wait()
    assert stored == [b"a", b"b", b"c", b"d"]
    assert wb.close() is None


@pytest.mark.parametrize("seed", range(6))
def test_nothing_waits_for_the_lazy_timer(seed, monkeypatch):
    """Random puts (lazy or not, runs or blocks), store_here, wait, flush and pauses on a
    small buffer, LAZY_WAIT at 30 s: every call returns at once (nothing waits for the
    timer) and the blocks are stored in order."""
    rnd = random.Random(seed)
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)
    stored: list[bytes] = []

    def append(native, packed, data=None):
        stored.append(packed if data is None else data)

    wb = WriteBehind(_identity_packer, append, limit=rnd.choice([300, 2000, 1 << 20]),
                     name="t", packers=rnd.choice([1, 2, 3]))
    end = lambda: 0  # noqa: E731
    t0 = time.monotonic()
    for i in range(300):
        lazy = rnd.random() < 0.6
        run = (1,) if lazy and rnd.random() < 0.5 else None
        assert wb.put(b"%d" % i, False, 100, end, 1 << 40, run=run, lazy=lazy)
        op = rnd.random()
        if op < 0.3:
            wb.store_here()
        elif op < 0.35:
            wb.wait()
        elif op < 0.38:
            wb.flush()
        elif op < 0.45:
            time.sleep(rnd.choice([0, 0.0005, 0.003]))
    assert wb.close() is None
    assert time.monotonic() - t0 < 20
    assert stored == [b"%d" % i for i in range(300)]


def _until_asleep(wb: WriteBehind) -> None:
    deadline = time.monotonic() + 10
    while wb._sleep != write_behind.ASLEEP and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wb._sleep == write_behind.ASLEEP


def _until_idle(wb: WriteBehind) -> None:
    """Until the storing thread waits for work (a lazy block is then the caller's)."""
    deadline = time.monotonic() + 10
    while not wb._storer_idle and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wb._storer_idle


def test_a_failure_under_a_lazy_run_counts_its_blocks_lost(monkeypatch):
    def append(native, packed, data=None):
        if data == b"bad":
            raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)
    wb = WriteBehind(_identity_packer, append, limit=1 << 20, name="t")
    end = lambda: 0  # noqa: E731
    _until_idle(wb)
    assert wb.put(b"bad", False, 100, end, 1 << 30, run=(1,), count=3, lazy=True)
    assert wb.put(b"x", False, 100, end, 1 << 30, lazy=True)
    assert wb.store_here()
    with pytest.raises(DeferredWriteError) as exc:
        wb.flush()
    assert exc.value.lost == 4 and exc.value.lost_bytes == 4
    assert wb.close() is None


def test_put_refuses_what_could_reach_the_ceiling_and_waits_for_room():
    release = threading.Event()
    wb = WriteBehind(_identity_packer, lambda native, p: release.wait(5), limit=250, name="t")
    assert not wb.put(b"x", False, 100, lambda: 950, 1000)  # 950 + 100 >= 1000
    assert wb.put(b"x", False, 100, lambda: 0, 1000)
    assert wb.put(b"y", False, 100, lambda: 0, 1000)
    threading.Timer(0.2, release.set).start()
    assert wb.put(b"z", False, 600, lambda: 0, 10_000)  # bigger than the limit: waits alone
    assert wb.blocks <= 1
    assert wb.close() is None and wb.blocks == 0


# ---- the drive -------------------------------------------------------------------------------
@pytest.fixture
def two(fast_dir):
    """Two drives on one library, the first buffered (the default), the second not."""
    lib = Library.create(fast_dir / "lib", _two_drive_config())
    drives = []
    for i, barcode in enumerate(("B00001L8", "U00001L8")):
        lib.create_cartridge(barcode, capacity=4 * MiB)
        d = TapeDrive(lib.load(barcode, i))
        check(d, 0, 0, 0, 0, 0, 0)  # power-on UA
        drives.append(d)
    good(drives[1], 0x15, 0x10, 0, 0, 4, 0, data=bytes([0, 0, 0x00, 0]))  # buffered mode 0
    assert drives[0].buffered_mode == 1 and drives[1].buffered_mode == 0
    yield drives
    lib.close()


def _two_drive_config():
    from vtl.config import LibraryConfig

    return LibraryConfig(drives=2, slots=4, mailslots=1)


def _block(rnd: random.Random, n: int) -> bytes:
    return rnd.randbytes(n // 2) + bytes(n - n // 2)


@pytest.fixture
def queued(monkeypatch) -> list[bool]:
    """What each TapeCartridge.queue_block call answered (True: the block went into the
    buffer), in order."""
    answers: list[bool] = []
    real_queue = TapeCartridge.queue_block

    def counting_queue(self, data, **kw):
        ok = real_queue(self, data, **kw)
        answers.append(ok)
        return ok

    monkeypatch.setattr(TapeCartridge, "queue_block", counting_queue)
    return answers


@contextmanager
def _failing_disk(monkeypatch, cart: TapeCartridge, err: int = errno.EIO) -> Iterator[None]:
    """The cartridge's stores fail with ``err``; they wait for the block's end, so that what
    is written in it waits in the buffer (answered GOOD). After the block the buffer has
    drained, failing, and stores work again."""
    go = threading.Event()

    def failing_append(*args):
        go.wait(5)
        raise OSError(err, os.strerror(err))

    real_append = cart._append
    monkeypatch.setattr(cart, "_append", failing_append)
    try:
        yield
    finally:
        go.set()
    cart.wait_writes()
    monkeypatch.setattr(cart, "_append", real_append)


def test_buffered_and_unbuffered_drives_answer_alike(two, queued):
    """A random mix of writes (past early warning to the end of the medium), filemarks,
    reads, spacing and READ POSITION: every answer identical, status, sense and data."""
    buffered, plain = two
    rnd = random.Random(5)
    sizes = [512, 20000, 65536, 100000, 262144, 300000]
    for step in range(300):
        roll = rnd.random()
        n = rnd.choice(sizes)
        if roll < 0.55:
            data = _block(rnd, n) if rnd.random() < 0.7 else rnd.randbytes(n)
            cmds = [(bytes([0x0A, 0]) + n.to_bytes(3, "big") + b"\0", data)]
        elif roll < 0.62:
            cmds = [(bytes([0x10, rnd.choice([0, 1]), 0, 0, 1, 0]), None)]
        elif roll < 0.75:
            cmds = [(bytes([0x08, rnd.choice([0, 2])]) + n.to_bytes(3, "big") + b"\0", None)]
        elif roll < 0.8:
            cmds = [(bytes([0x01, 0, 0, 0, 0, 0]), None)]
        elif roll < 0.85:
            cmds = [(bytes([0x11, 0]) + (-2 & 0xFFFFFF).to_bytes(3, "big") + b"\0", None)]
        elif roll < 0.9:
            cmds = [(bytes([0x11, 3, 0, 0, 0, 0]), None)]  # to end of data
        elif roll < 0.95:
            cmds = [(bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None)]
        else:
            cmds = [(bytes([0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 0, 0x40, 0, 0]), None)]  # LOG SENSE
        for cdb, data in cmds:
            a = buffered.execute(A, cdb, data)
            b = plain.execute(A, cdb, data)
            assert (a.status, bytes(a.sense), bytes(a.data)) == \
                (b.status, bytes(b.sense), bytes(b.data)), f"step {step}: {cdb.hex()}"
    assert queued.count(True) > 30 and queued.count(False) > 5  # both ways were taken


def test_disk_failure_under_buffered_blocks_is_a_deferred_error(two, monkeypatch):
    drv = two[0]
    rnd = random.Random(9)
    blocks = [_block(rnd, BLOCK) for _ in range(6)]
    for b in blocks[:3]:
        assert write(drv, b).status == Status.GOOD
    cart = drv._medium()
    cart.wait_writes()
    with _failing_disk(monkeypatch, cart):
        for b in blocks[3:]:  # all three wait in the buffer: answered GOOD
            assert write(drv, b).status == Status.GOOD
    # INQUIRY does not take the deferred error (as with a UA); the next command does
    assert good(drv, 0x12, 0, 0, 0, 36, 0)[0] == 0x01
    r = run(drv, 0, 0, 0, 0, 0, 0)
    assert r.status == Status.CHECK_CONDITION
    assert r.s.raw[0] & 0x7F == 0x71  # deferred
    assert r.s.code == (SenseKey.MEDIUM_ERROR, 0x0C, 0) and r.s.info == 3
    assert pos(drv) == 3  # the tape ends after the last block stored
    flags = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 1, 0, 0)
    assert flags[4 + 5 * 5 + 4] == 1  # TapeAlert flag 6, write failure
    # the initiator writes the lost blocks again; everything reads back in order
    for b in blocks[3:]:
        assert write(drv, b).status == Status.GOOD
    wfm(drv)
    rewind(drv)
    for b in blocks:
        assert read(drv, BLOCK).d == b


def _setblk(drv, bs: int, buffered: bool) -> None:
    good(drv, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10 if buffered else 0, 8, 0, 0, 0, 0,
                                                   0]) + bs.to_bytes(3, "big"))


def test_fixed_mode_buffers_one_block_commands_and_counts_lost_blocks(two, queued,
                                                                       monkeypatch):
    """Fixed mode (`mt setblk 65536`): a one-block WRITE(6) goes into the buffer as the
    same variable-mode block would, a command of several blocks as one run (queue_run); a
    disk failure under buffered blocks is a deferred error whose INFORMATION counts the
    blocks lost, and the tape ends after the last block stored."""
    buffered, plain = two
    for d, on in ((buffered, True), (plain, False)):
        _setblk(d, BLOCK, on)
    rnd = random.Random(12)
    blocks = [_block(rnd, BLOCK) for _ in range(8)]
    for cdb, data in ((bytes([0x0A, 1, 0, 0, 1, 0]), blocks[0]),
                      (bytes([0x0A, 1, 0, 0, 1, 0]), blocks[1]),
                      (bytes([0x0A, 1, 0, 0, 2, 0]), blocks[2] + blocks[3]),
                      (bytes([0x0A, 1, 0, 0, 1, 0]), blocks[4])):
        for d in two:
            assert d.execute(A, cdb, data).status == Status.GOOD
    assert queued == [True, True, True]  # the buffered drive's one-block commands
    assert pos(buffered) == pos(plain) == 5
    cart = buffered._medium()
    cart.wait_writes()
    with _failing_disk(monkeypatch, cart):
        for b in blocks[5:]:  # all three wait in the buffer: answered GOOD
            assert run(buffered, 0x0A, 1, 0, 0, 1, 0, data=b).status == Status.GOOD
    r = run(buffered, 0x0A, 1, 0, 0, 1, 0, data=blocks[5])  # ends with the deferred error
    assert r.status == Status.CHECK_CONDITION and r.s.raw[0] & 0x7F == 0x71
    assert r.s.code == (SenseKey.MEDIUM_ERROR, 0x0C, 0) and r.s.info == 3
    assert pos(buffered) == 5
    rewind(buffered)
    r = run(buffered, 0x08, 1, 0, 0, 5, 0)
    assert r.status == Status.GOOD and r.d == b"".join(blocks[:5])


def test_fixed_mode_runs_are_answered_then_stored_by_the_idle_hook(two, monkeypatch):
    """`mt setblk 512`: a WRITE(6) of several blocks is answered GOOD with the run queued
    lazily (TapeCartridge.queue_run), stored by the drive's idle hook on the same thread,
    else by the buffer's thread for the next command that waits; the tape is byte for byte
    what the unbuffered drive writes. A disk failure under a run is a deferred error
    counting all its blocks lost; the tape ends before the run."""
    monkeypatch.setattr(write_behind, "LAZY_WAIT", 30.0)  # no wake-up in the middle
    monkeypatch.setattr(ssc, "MIN_BUFFERED_RUN", 0)  # 10 KiB runs lazy too
    buffered, plain = two
    for d, on in ((buffered, True), (plain, False)):
        _setblk(d, 512, on)
    text = b"".join(b"%06d backup wrote /srv/%d.log\n" % (i, i) for i in range(2000))
    rnd = random.Random(3)
    runs = [text[i * 10240:(i + 1) * 10240] for i in range(4)] + [rnd.randbytes(20 * 512)]
    cart = buffered._medium()
    for i, data in enumerate(runs):
        if i == 1:
            _until_idle(cart._wb)
        for d in two:
            assert write(d, data, fixed=True).status == Status.GOOD
        if i == 1:
            assert cart.writes_pending  # answered, not stored yet
            buffered.idle()
            assert not cart.writes_pending  # stored by the idle hook, on this thread
        # else READ POSITION waits for it (the buffer's thread stores it)
        assert pos(buffered) == pos(plain) == 20 * (i + 1)
    wfm(buffered)
    wfm(plain)
    assert cart.path.read_bytes()[4096:] == plain._medium().path.read_bytes()[4096:]

    def failing(*args):
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(cart, "_append_run", failing)
    assert write(buffered, runs[0], fixed=True).status == Status.GOOD
    buffered.idle()
    cart.wait_writes()
    monkeypatch.delattr(cart, "_append_run")
    r = run(buffered, 0x10, 0, 0, 0, 1, 0)  # WRITE FILEMARKS: the deferred error
    assert r.status == Status.CHECK_CONDITION and r.s.raw[0] & 0x7F == 0x71
    assert r.s.code == (SenseKey.MEDIUM_ERROR, 0x0C, 0) and r.s.info == 20
    assert pos(buffered) == 101  # five runs and a filemark


def test_a_deferred_error_ends_the_next_write_which_is_not_written(two, monkeypatch):
    drv = two[0]
    cart = drv._medium()
    blocks = [bytes([i]) * BLOCK for i in range(3)]
    assert write(drv, blocks[0]).status == Status.GOOD
    cart.wait_writes()
    with _failing_disk(monkeypatch, cart, errno.ENOSPC):
        assert write(drv, blocks[1]).status == Status.GOOD
    r = write(drv, blocks[2])
    assert r.status == Status.CHECK_CONDITION and r.s.raw[0] & 0x7F == 0x71
    assert r.s.code == (SenseKey.MEDIUM_ERROR, 0x0C, 0) and r.s.info == 1
    assert pos(drv) == 1
    assert write(drv, blocks[2]).status == Status.GOOD
    assert pos(drv) == 2


def test_a_deferred_error_goes_to_the_initiator_whose_write_failed(two, monkeypatch):
    drv = two[0]
    assert check(drv, 0, 0, 0, 0, 0, 0, nexus=B).code == (6, 0x29, 0)  # B's power-on UA
    cart = drv._medium()
    monkeypatch.setattr(cart, "_append", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO,
                                                                                  "x")))
    assert write(drv, bytes(BLOCK)).status == Status.GOOD  # A's block, buffered
    cart.wait_writes()
    monkeypatch.undo()
    good(drv, 0, 0, 0, 0, 0, 0, nexus=B)  # not B's error
    r = run(drv, 0, 0, 0, 0, 0, 0)
    assert r.s.raw[0] & 0x7F == 0x71 and r.s.info == 1  # A's
    good(drv, 0, 0, 0, 0, 0, 0)


def test_a_buffered_block_is_safe_from_the_transport_reusing_its_memory(two, monkeypatch):
    """data_out that is not a DonatedBuffer is the transport's again once execute returns:
    the buffer must hold a copy. A DonatedBuffer is kept as it is (no copy)."""
    drv = two[0]
    cart = drv._medium()
    gate = threading.Event()
    kept = []
    real_new_packer = cart._new_packer

    def new_packer(packer=None):
        real_pack = real_new_packer(packer)

        def pack(data, compress):
            gate.wait(5)
            kept.append(data)
            return real_pack(data, compress)

        return pack

    monkeypatch.setattr(cart, "_new_packer", new_packer)
    reused = bytearray(b"A" * BLOCK)
    assert write(drv, reused).status == Status.GOOD
    reused[:] = b"B" * BLOCK  # the transport's next command lands in the same memory
    gift = DonatedBuffer(b"C" * BLOCK)
    assert write(drv, memoryview(gift)).status == Status.GOOD
    gate.set()
    wfm(drv)
    bases = [k.obj if isinstance(k, memoryview) else k for k in kept]
    assert any(b is gift for b in bases)  # kept, not copied
    assert not any(b is reused for b in bases)  # copied: the transport reuses it
    rewind(drv)
    assert read(drv, BLOCK).d == b"A" * BLOCK
    assert read(drv, BLOCK).d == b"C" * BLOCK


def test_descriptor_sense_keeps_deferred(two, monkeypatch):
    drv = two[0]
    page = bytearray(good(drv, 0x1A, 0x08, 0x0A, 0, 255, 0)[4:])
    page[2] |= 0x04  # D_SENSE on; the header keeps buffered mode 1
    good(drv, 0x15, 0x10, 0, 0, 4 + len(page), 0, data=bytes([0, 0, 0x10, 0]) + bytes(page))
    cart = drv._medium()
    monkeypatch.setattr(cart, "_append", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO,
                                                                                  "x")))
    assert write(drv, bytes(BLOCK)).status == Status.GOOD
    cart.wait_writes()
    r = drv.execute(A, bytes(6))
    assert r.status == Status.CHECK_CONDITION and r.sense[0] == 0x73


def test_unload_stores_what_is_buffered(two):
    drv = two[0]
    data = [bytes([7]) * BLOCK for _ in range(8)]
    for b in data:
        assert write(drv, b).status == Status.GOOD
    lib = drv.bay.library
    barcode = drv.bay.barcode
    lib.unload(0)  # the changer takes the cartridge away right after the last WRITE
    bay = lib.load(barcode, 0)
    cart = bay.mount()
    assert cart.eod == 8 and cart.read_block().data == data[0]


# ---- background fdatasync ------------------------------------------------------------------
def test_background_sync_error_reaches_the_next_sync(fast_dir, monkeypatch):
    """A writeback error met by the background fdatasync is Linux's one report of it: the
    cartridge's next sync (a filemark) must raise it, not find a clean fsync."""
    import tape_formats.background_sync as bgs
    import tape_formats.writeback_pacing as pacing
    from tape_formats.media import MEDIA

    monkeypatch.setattr(pacing, "WRITEBACK_CHUNK", 64 * 1024)
    monkeypatch.setattr(pacing, "BACKGROUND_SYNC_CHUNK", 128 * 1024)
    calls = []

    def failing_fdatasync(fd):
        calls.append(fd)
        raise OSError(errno.EIO, "lost page")

    monkeypatch.setattr(bgs.os, "fdatasync", failing_fdatasync)
    path = fast_dir / "S00001L8.vtape"
    TapeCartridge.create(path, "S00001L8", MEDIA["LTO-8"], capacity=64 * MiB)
    cart = TapeCartridge.open(path)
    try:
        for i in range(8):
            cart.write_block(random.Random(i).randbytes(BLOCK))
        cart._pacer.background.wait()
        assert calls
        with pytest.raises(OSError) as exc:
            cart.write_filemarks(1)
        assert exc.value.errno == errno.EIO
        monkeypatch.undo()
        cart.write_filemarks(1)  # reported once; the data is still there to be synced
    finally:
        cart.close()
    with TapeCartridge.open(path) as again:
        assert again.eod == 10
