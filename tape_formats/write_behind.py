"""A drive's write buffer: blocks accepted at once, compressed and appended on threads of
their own.

An LTO drive in buffered mode (SSC: MODE SELECT Buffered Mode 1, the default) answers a
WRITE as soon as the block is in its buffer and streams the buffer to tape while the next
block arrives. Here the costly part of a write runs behind the initiator's back: packers
(zstd and crc32c, which release the GIL) work on the next blocks in parallel, each with a
compressor of its own, and one appender writes the packed blocks to the cartridge strictly in
the order they were accepted. Compression is the bottleneck of a stream of real data (a
core compresses a tar of source code at ~250 MB/s), so it gets a second core when the
buffer fills up faster than one thread empties it.

A fixed-block WRITE's blocks are queued as one lazy item (``TapeCartridge.queue_run``): the
drive answers, then packs and stores them itself from its idle hook (``store_here``): the
zstd per block overlaps the initiator's turn, with no hand-off to another thread.

What may be queued is decided by ``TapeCartridge.queue_block``: only appends that nothing but
a disk error can stop. Every other operation waits until the buffer is empty, so positions,
early warning, end of medium and overwrites behave exactly as without the buffer. A disk
error on a queued block is kept and raised by the next ``flush`` (SCSI reports it as a
deferred error); the blocks queued behind it are dropped, never written out of order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from tape_formats.malloc_tuning import keep_freed_memory

Data = bytes | bytearray | memoryview
Pack = Callable[[Data, bool], Any]  # (data, compress) -> packed block
Append = Callable[..., None]  # (native length, packed block) or (native, run, data) -> stored
Done = Callable[[Data], None]  # (data) once the buffer holds no reference to it


# The lazy blocks (``put(lazy=True)``) their caller did not store (no idle hook came) are
# stored by the storing thread after this long. It keeps that timer only while lazy blocks
# come; after one LAZY_WAIT with none, it sleeps until woken: an idle buffer makes no wake-up.
LAZY_WAIT = 0.1

# The storing thread's sleep (``_sleep``): awake or on the LAZY_WAIT timer; sleeping with no
# timeout (nothing queued, no lazy block lately); woken by a lazy ``put`` (its block gets
# LAZY_WAIT for the caller's idle hook first). Every other wake-up clears it back to AWAKE.
AWAKE, ASLEEP, KICKED = 0, 1, 2


class DeferredWriteError(Exception):
    """Queued blocks were not written: ``lost`` of them (``lost_bytes`` native bytes), the
    first one failing with ``cause``; the tape ends after the last block written."""

    def __init__(self, cause: BaseException, lost: int, lost_bytes: int) -> None:
        super().__init__(f"{lost} buffered block(s) not written: {cause}")
        self.cause = cause
        self.lost = lost
        self.lost_bytes = lost_bytes


class _Block:
    __slots__ = ("data", "native", "compress", "worst", "done", "run", "count", "packed",
                 "error", "ready")

    def __init__(self, data: Data, compress: bool, worst: int, done: Done | None,
                 run: Any, count: int) -> None:
        self.data: Data | None = data
        self.native = len(data)
        self.compress = compress
        self.worst = worst
        self.done = done
        self.run = run  # None: one block; else what ``pack`` needs for a run of blocks
        self.count = count  # blocks (tape objects) it holds
        self.packed: Any = None
        self.error: BaseException | None = None
        self.ready = False


class WriteBehind:
    """Blocks in acceptance order, stored by one thread that packs (``new_packer()`` gives
    each thread its own ``pack``) and appends them in order with ``append``; ``packers - 1``
    helper threads pack blocks further back when they pile up (a quarter of ``limit``
    waiting to be packed), so a buffer that keeps up costs one thread hand-off per block and
    a backlog gets more cores.

    ``limit`` bounds the worst-case medium bytes waiting (each block counted as stored
    uncompressed, with its record header): ``put`` blocks while the buffer is full, which keeps
    memory flat however fast the initiator sends.

    ``store_packer``, when given, is the storing thread's ``pack`` (else ``new_packer()``):
    the caller's own, used by nobody else while blocks are queued, so that blocks packed in
    order by one thread come out as the caller's writes without the buffer would have.
    """

    def __init__(self, new_packer: Callable[[], Pack], append: Append, limit: int, name: str,
                 packers: int = 2, store_packer: Pack | None = None) -> None:
        keep_freed_memory()  # (once per process) blocks come and go at the data rate
        self._append = append
        self._limit = limit
        lock = self._lock = threading.Lock()  # (taken as it is on the hot paths: a
        # Condition's ``with`` is a Python frame each way)
        self._room = threading.Condition(lock)  # put() and flush() wait here
        self._head = threading.Condition(lock)  # the storing thread waits for its next block
        self._help = threading.Condition(lock)  # helpers wait for a backlog
        self._blocks: deque[_Block] = deque()  # accepted, not yet appended (in order)
        self._to_pack: deque[_Block] = deque()  # accepted, nobody packing them yet
        self._backlog = 0  # bytes in _to_pack
        self._help_from = max(1, limit // 4)  # helpers pack while the backlog is this big
        # A full buffer wakes its writer once this much is stored again, not per block: a
        # wake-up is a futex call made holding the GIL (bench/README.md, bench_dedup.py).
        self._wake_at = limit - limit // 4
        self.blocks = 0  # queued or being stored
        self.reserved = 0  # their worst-case medium bytes
        self._error: BaseException | None = None
        self._lost = 0
        self._lost_bytes = 0
        self._stopping = False
        self._claimed = False  # a caller stores the queued blocks itself (store_here)
        self._storer_idle = False  # the storing thread waits for work
        self._sleep = AWAKE  # ASLEEP: it waits with no timeout (KICKED: a lazy put woke it)
        self._lazy_seen = False  # a lazy block came since the storing thread's timer started
        self._own_pack = store_packer or new_packer()  # the storing thread's (store_here's)
        self._threads = [threading.Thread(target=self._store, args=(self._own_pack,),
                                          daemon=True, name=f"write-behind {name}")]
        for i in range(1, max(1, packers)):
            self._threads.append(threading.Thread(
                target=self._helper, args=(new_packer(),), daemon=True,
                name=f"write-behind {name} packer {i}"))
        for t in self._threads:
            t.start()

    def put(self, data: Data, compress: bool, worst: int, end: Callable[[], int],
            ceiling: int, done: Done | None = None, run: Any = None, count: int = 1,
            lazy: bool = False) -> bool:
        """Queue ``data`` if ``end() + reserved + worst`` stays below ``ceiling``; False (and
        nothing queued) otherwise. ``end()`` is the medium offset after the last block stored:
        it is read under the buffer's lock, where it never lags behind ``reserved``, so the
        sum can only overestimate. ``done(data)`` is called once the block is stored (or
        dropped) and the buffer holds no reference to ``data`` any more. ``run``, when not
        None, makes ``data`` a run of ``count`` blocks (a fixed-block WRITE's), not packed
        but appended as ``append(native, run, data)`` (the appender packs it: its records'
        offsets are known then); a deferred error counts its ``count`` blocks lost.
        ``lazy``: the storing thread is not woken for it: the caller stores it with
        ``store_here`` once it has answered (anything that waits for the buffer wakes it)."""
        with self._lock:
            while self.blocks and self.reserved + worst > self._limit:
                if self._storer_idle:  # full of lazy blocks: the storing thread takes them
                    self._sleep = AWAKE
                    self._head.notify()
                self._room.wait()
            if self._error is not None or self._stopping:
                return False
            if end() + self.reserved + worst >= ceiling:
                return False
            block = _Block(data, compress, worst, done, run, count)
            self._blocks.append(block)
            self._to_pack.append(block)
            self._backlog += block.native
            self.blocks += 1
            self.reserved += worst
            if self._storer_idle and not lazy:
                self._sleep = AWAKE
                self._head.notify()
            else:
                if lazy:
                    if self._sleep == ASLEEP:  # start its LAZY_WAIT timer for this block
                        self._sleep = KICKED
                        self._head.notify()
                    else:
                        self._lazy_seen = True
                if self._backlog >= self._help_from:
                    self._help.notify()
        return True

    @property
    def failed(self) -> bool:
        return self._error is not None

    def store_here(self) -> bool:
        """Pack and store what is queued on the calling thread (the one that queues), when
        the storing thread waits for work and nobody packs any of it: a lazy block is
        answered first and stored right after, on the thread that took it, with no
        hand-off. Otherwise the storing thread is woken for it. True: stored here (or
        dropped after an error, as the storing thread drops blocks)."""
        with self._lock:
            if not self._blocks:
                return False
            if (not self._storer_idle or self._claimed
                    or len(self._to_pack) != len(self._blocks)):
                self._sleep = AWAKE
                self._head.notify()
                return False
            self._claimed = True
            work = list(self._to_pack)  # all of them, in order: the same as _blocks
            self._to_pack.clear()
            self._backlog = 0
            skip = self._error is not None
        try:
            for block in work:
                if not skip and block.run is None:  # (a run is packed by append)
                    self._pack(self._own_pack, block)
                block.ready = True
                skip = self._finish(block, skip)
        finally:
            with self._lock:
                self._claimed = False
                if self._blocks:
                    self._sleep = AWAKE
                    self._head.notify()
        return True

    def wait(self) -> None:
        """Until every queued block is stored or dropped (an error stays for ``flush``)."""
        with self._room:
            self._drain()

    def flush(self) -> None:
        """``wait``, then raise the error a queued block met, once."""
        with self._room:
            self._drain()
            error = self._error
            if error is None:
                return
            lost, lost_bytes = self._lost, self._lost_bytes
            self._error, self._lost, self._lost_bytes = None, 0, 0
        raise DeferredWriteError(error, lost, lost_bytes)

    def close(self) -> DeferredWriteError | None:
        """Store what is queued, stop the threads; returns the error nobody collected."""
        try:
            self.flush()
            error = None
        except DeferredWriteError as exc:
            error = exc
        with self._room:
            self._stopping = True
            self._sleep = AWAKE
            self._head.notify_all()
            self._help.notify_all()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join()
        return error

    def _drain(self) -> None:
        """(Under the lock) until the buffer is empty."""
        if self.blocks:
            self._sleep = AWAKE
            self._head.notify()  # lazy blocks: the storing thread stores them
        while self.blocks:
            self._room.wait()

    @staticmethod
    def _pack(pack: Pack, block: _Block) -> None:
        if block.run is not None:  # a run: packed by append
            return
        try:
            block.packed = pack(block.data, block.compress)
        except BaseException as exc:  # kept for the next flush
            block.error = exc

    def _store(self, pack: Pack) -> None:
        """The storing thread: appends the next block in order once it is packed, and packs
        the oldest unclaimed block itself whenever that one is not ready yet."""
        head = self._head
        blocks = self._blocks
        to_pack = self._to_pack
        while True:
            with head:
                kicked = False
                while not blocks or self._claimed or kicked:
                    if self._stopping and not blocks:
                        return
                    self._storer_idle = True
                    if blocks or self._lazy_seen or kicked:
                        # Lazy blocks nobody stored (no idle hook came): taken after LAZY_WAIT.
                        kicked = self._lazy_seen = False
                        timed_out = not head.wait(LAZY_WAIT)
                    else:  # nothing queued, no lazy block lately: until someone wakes it
                        self._sleep = ASLEEP
                        head.wait()
                        kicked = self._sleep == KICKED
                        self._sleep = AWAKE
                        timed_out = False
                    self._storer_idle = False
                    if timed_out and blocks and not self._claimed:
                        break
                block = blocks[0]
                work = None
                if not block.ready:
                    if to_pack:
                        work = to_pack.popleft()  # the head itself, or one a helper will not
                        self._backlog -= work.native
                    else:
                        while not block.ready:  # a helper is packing it
                            head.wait()
                skip = self._error is not None
            if work is not None:
                if not skip:
                    self._pack(pack, work)
                work.ready = True
                if work is not block:
                    continue  # packed a later one while a helper has the head: go round
            self._finish(block, skip)

    def _finish(self, block: _Block, skip: bool) -> bool:
        """Append the head block (packed), or drop it (``skip``: an earlier one failed);
        returns whether the blocks after it are to be dropped."""
        error = block.error
        if not skip and error is None:
            try:
                if block.run is None:
                    self._append(block.native, block.packed)
                else:
                    self._append(block.native, block.run, block.data)
            except BaseException as exc:  # kept for the next flush
                error = exc
        data, done = block.data, block.done
        block.data = block.packed = block.done = None  # the memory goes back now
        if done is not None:
            done(data)
        del data
        with self._lock:
            self._blocks.popleft()
            self.blocks -= 1
            self.reserved -= block.worst
            if skip or error is not None:
                if error is not None:
                    self._error = error
                self._lost += block.count
                self._lost_bytes += block.native
            if not self.blocks or self.reserved <= self._wake_at:
                self._room.notify_all()
            return self._error is not None

    def _helper(self, pack: Pack) -> None:
        """A helper thread: packs the oldest unclaimed block while the backlog is big."""
        help_ = self._help
        to_pack = self._to_pack
        while True:
            with help_:
                while not to_pack or self._backlog < self._help_from:
                    if self._stopping:
                        return
                    help_.wait()
                block = to_pack.popleft()
                self._backlog -= block.native
                skip = self._error is not None
                if to_pack and self._backlog >= self._help_from:
                    help_.notify()
            if not skip:
                self._pack(pack, block)
            with help_:
                block.ready = True
                self._sleep = AWAKE
                self._head.notify()
