"""The dedup write path's back half: new chunks compressed on a small pool, appended in order.

A dedup cartridge's stream is cut into chunks and hashed on the cartridge's cut thread
(dedup_medium.py: FastCDC, BLAKE3); what a cut yields goes to a ``ChunkWriter`` as one
*batch* and the cut thread returns at once. Here each batch's chunks are looked up in the
index with one query (on the caller's thread, so that a chunk seen twice is stored once),
those the store lacks are compressed on ``COMPRESS_THREADS`` threads (zstd releases the
GIL; one batch per thread at a time, each thread with its own compressor), and each
batch's records go to the writer's pack in the order the batches were cut, with one
``pwritev`` per batch. At most ``IN_FLIGHT`` batches wait or run, which bounds memory (a
batch holds one 5.5 MiB stream buffer, stream_tail.py: about 40 MiB for a writing
cartridge with the cut's and the spares) and makes a writer that outruns the pool wait.

Nothing here is durable by itself: a sync point first ``drain``s the writer (every batch
appended to its pack), then runs the store's ``sync`` (packs, then index rows). A reader of
the same cartridge drains it too before it looks a chunk up. An error of a batch (a pack
write failing) is kept and raised by every later ``submit`` and ``drain`` until ``close``:
the stream has lost chunks, so no later sync point may pretend otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import zstandard

from tape_formats.malloc_tuning import keep_freed_memory
from tape_formats.store import pack as packs
from tape_formats.store.chunk_store import ChunkStore

# Chunks are compressed with zstd's fast strategy, the family of the drive's -1
# (block_packing.ZSTD_LEVEL): compression is most of a first full's CPU (the dedup path also
# cuts and hashes, which the plain one does not) and decompression most of a restore's.
# Measured on the bench_dedup tar in 128 KiB chunks (CPU s per GB, best and median of four
# passes at load ~7; stored fraction of the bytes): level -3 compresses in 1.84-2.06 and
# decompresses in 0.55-0.57, storing 0.449; -5: 1.64-1.74, 0.49-0.51, 0.494; -3's settings
# with matches of at least 7 bytes (5), a 16 K-entry hash table (8 K) and a step of 2 (3):
# 1.68-1.72, 0.47-0.49, 0.444, as small as -3 for 15% less CPU both ways. (-1: 2.41, 0.403.)
# Now a step of 4 (2026-12-04, issue 16's first full, which needs less CPU to reach 0.8x
# the plain store): two passes at load ~4, 1.52-1.61 against 1.84-1.97 to compress, 0.55-0.63
# against 0.68-0.72 to decompress, storing 0.492 (a step of 3: 1.65-1.70, 0.470); four
# weekly fulls take 1.19x one plain cartridge instead of 1.07-1.10x (goal < 1.3x).
# A step of 5 (tried 2026-12-04): ~8% less CPU to compress but 0.512 of the bytes stored,
# four fulls 1.24-1.27x one plain cartridge: too close to the 1.3x goal for ~3% of the
# first full's CPU, so 4 stays.
# Chunks stored with any settings read back alike (a zstd frame says how to decode it).
CHUNK_ZSTD_PARAMS = zstandard.ZstdCompressionParameters(
    strategy=zstandard.STRATEGY_FAST, window_log=18, hash_log=14, chain_log=12, search_log=1,
    min_match=7, target_length=4)
# Incompressible chunks in a row (compressed or encrypted data: zstd finds nothing and the
# chunk is stored raw) after which the next ``SKIP_CHUNKS`` are stored raw without trying,
# then one is tried again, as the drive's block packer does (block_packing.py): zstd runs
# through random data at ~0.19 CPU s per GB, a tenth of a first full of such data (two
# thirds of it saved). Runs this long (~5.8 MB) are rare in ordinary data: on bench_dedup's
# tar (196 of 3,847 chunks incompressible) 32/64 would store 0.02 MB more, 16/32 3 MB,
# 8/16 5 MB (a replay of its chunks' compressibility).
MISSES_BEFORE_SKIP = 32
SKIP_CHUNKS = 64
COMPRESS_THREADS = 2
IN_FLIGHT = 2 * COMPRESS_THREADS  # batches submitted and not yet appended (one compressing,
# one waiting per thread: 4 MiB batches keep a thread busy for several ms each)


Buffer = bytes | memoryview | zstandard.BufferSegment


def _compress_run(cctx: zstandard.ZstdCompressor, pieces: list[memoryview]) -> Sequence[Buffer]:
    """Each piece as a zstd frame of its own, all in one call that releases the GIL once
    (``multi_compress_to_buffer``: the same frames as ``compress`` gives one by one; a
    GIL hand-off per chunk, ~5,500 per GB, kept the other threads waiting). The frames
    are views of one buffer, kept alive by each of them."""
    try:
        return cctx.multi_compress_to_buffer(pieces, threads=1)
    except NotImplementedError:  # (a zstandard backend without it)
        return [cctx.compress(piece) for piece in pieces]


def _nothing() -> None:
    pass


class ChunkWriter:
    """The compress-and-append stages of one writer (one open dedup cartridge)."""

    def __init__(self, store: ChunkStore, threads: int = COMPRESS_THREADS) -> None:
        keep_freed_memory()  # (once per process) zstd's outputs come and go per chunk
        self._store = store
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None  # started by the first new chunk
        self._local = threading.local()  # each pool thread's compressor
        self._room = threading.Semaphore(IN_FLIGHT)
        self._cv = threading.Condition(threading.Lock())
        self._submitted = 0  # batches handed to the pool
        self._appended = 0  # batches whose turn at the pack is over (in order)
        # compressed batches waiting for their turn, by turn: (records, done)
        self._ready: dict[int, tuple[list, Callable[[], None]]] = {}
        self._appending = False  # a thread is appending the ready batches in order
        self._draining = 0  # threads waiting in drain
        self._error: BaseException | None = None
        self._seen: set[bytes] = set()  # new chunks submitted since the last drain
        # incompressible chunks in a row, chunks left to store raw (shared by the threads:
        # their batches follow each other in the stream, an approximate count is enough)
        self._misses = self._skip = 0

    def submit(self, ids: Sequence[bytes], pieces: Sequence[memoryview],
               done: Callable[[], None] = lambda: None, *, last: bool = False) -> None:
        """Store those of the chunks (``ids[i]`` holds ``pieces[i]``) that the store lacks,
        in order, behind the caller's back. The pieces must stay unchanged until ``done``
        is called (from any thread: they are views of a buffer the caller lets go of).

        ``last``: the batch a sync point waits for (no other comes behind it before the
        drain): its new chunks go to the pool as one batch per thread, so every thread
        compresses a share of it instead of one doing it all while the others wait
        (``done`` goes with the last share: the shares are appended in order)."""
        self._raise_error()
        new = [i for i in self._store.lacking(ids) if ids[i] not in self._seen]
        fresh: dict[bytes, memoryview] = {}
        for i in new:
            fresh.setdefault(ids[i], pieces[i])
        if not fresh:
            done()
            return
        self._seen.update(fresh)
        chunks = list(fresh.items())
        shares = min(self._threads, len(chunks)) if last else 1
        for k in range(shares):
            share = chunks[len(chunks) * k // shares:len(chunks) * (k + 1) // shares]
            self._submit_batch(share, done if k == shares - 1 else _nothing)

    def _submit_batch(self, chunks: list[tuple[bytes, memoryview]],
                      done: Callable[[], None]) -> None:
        """One batch to the pool, in its turn (waits for room)."""
        self._room.acquire()
        with self._cv:
            turn = self._submitted
            self._submitted += 1
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="chunk-zstd")
            self._pool.submit(self._store_batch, turn, chunks, done)
        except RuntimeError:  # no thread to be had (interpreter shutdown): store it here
            self._store_batch(turn, chunks, done)

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(
                compression_params=CHUNK_ZSTD_PARAMS)
        return cctx

    def _store_batch(self, turn: int, chunks: list[tuple[bytes, memoryview]],
                     done: Callable[[], None]) -> None:
        """Compress a batch (any order across threads), then append it in its turn: a
        thread whose batch is early leaves it for the one appending (never waits for its
        turn), and the thread whose batch is next appends it and every one ready behind."""
        records: list[packs.Record] = []
        try:
            if self._error is None:
                self._compress(chunks, records)
        except BaseException as exc:  # kept, raised to the writer
            self._fail(exc)
        chunks.clear()
        with self._cv:
            self._ready[turn] = (records, done)
            if self._appending or turn != self._appended:
                return  # the thread appending, or the one whose batch is next, takes it
            self._appending = True
        self._append_ready()

    def _compress(self, chunks: list[tuple[bytes, memoryview]],
                  records: list[packs.Record]) -> None:
        """The batch's records, in order, with their CRCs (computed here, off the store's
        lock): each chunk as a zstd frame when that is smaller, else as it is (after ``MISSES_BEFORE_SKIP`` such chunks in a row, the next
        ``SKIP_CHUNKS`` untried). The chunks to try go to zstd a run at a time, one call
        (one release of the GIL) for the run: a run ends where the misses could reach
        ``MISSES_BEFORE_SKIP``, so the same chunks are tried as one by one."""
        cctx = self._compressor()
        i = 0
        while i < len(chunks):
            if self._skip:
                self._skip -= 1
                cid, piece = chunks[i]
                records.append((cid, packs.RAW, piece, packs.record_crc(cid, packs.RAW, piece)))
                i += 1
                continue
            run = chunks[i:i + MISSES_BEFORE_SKIP - self._misses]
            bodies = _compress_run(cctx, [piece for _cid, piece in run])
            for k, (cid, piece) in enumerate(run):
                body = bodies[k]
                if len(body) < len(piece):  # (its CRC now, while in the cache)
                    records.append((cid, packs.ZSTD, body,
                                    packs.record_crc(cid, packs.ZSTD, body)))
                    self._misses = 0
                else:
                    records.append((cid, packs.RAW, piece,
                                    packs.record_crc(cid, packs.RAW, piece)))
                    self._misses += 1
                    if self._misses >= MISSES_BEFORE_SKIP:  # (only at the run's end)
                        self._misses, self._skip = 0, SKIP_CHUNKS
            i += len(run)

    def _append_ready(self) -> None:
        """Append the batches ready in order, from the next one on, until one is missing
        (its thread appends it and those behind it when it is done)."""
        while True:
            with self._cv:
                item = self._ready.pop(self._appended, None)
                if item is None:
                    self._appending = False
                    return
            records, done = item
            try:
                if self._error is None:
                    self._store.append_many(records)
            except BaseException as exc:
                self._fail(exc)
            finally:
                records.clear()
                done()
                with self._cv:
                    self._appended += 1
                    if self._draining:  # the only waiter: wake it only when there is one
                        self._cv.notify_all()
                self._room.release()

    def _fail(self, exc: BaseException) -> None:
        with self._cv:
            if self._error is None:
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait until every batch submitted is in its pack (not durable yet: the store's
        ``sync`` does that); raises the error of a batch that failed."""
        with self._cv:
            self._draining += 1
            try:
                while self._appended != self._submitted:
                    self._cv.wait()
            finally:
                self._draining -= 1
        self._seen.clear()  # in the store's pending rows from now on
        self._raise_error()

    def close(self) -> None:
        """Finish what was submitted and stop the pool (errors are left to ``drain``)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
