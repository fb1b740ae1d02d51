"""The dedup medium: a cartridge file whose record payloads live in the chunk store.

The cartridge file keeps the *skeleton*: the bytes outside the record payloads (the header,
record headers, filemarks). A cartridge made now has a *dense* skeleton: those bytes back
to back, so a file offset ``x`` outside the payloads is at ``x`` minus the payload bytes
before it (32 bytes of disk per record, not a page); one made before (a ``VTLRCP1`` recipe)
keeps its *sparse* skeleton: the same size and offsets as a plain file, payloads as holes,
still read and appended to. A record's payload (the second buffer of a ``pwritev``) joins
the cartridge's data stream, which FastCDC cuts into chunks (cut across blocks, so block
boundaries do not matter to dedup). The writing thread only copies payloads into a stream
buffer (stream_tail.py) and hands each full one (``CUT_BATCH``) to the *cut thread*
(serial_thread.py), which cuts it and hands the chunks to the *hash thread*, which hashes
each chunk (BLAKE3) and gives the batch to the cartridge's chunk writer (chunk_writer.py),
whose threads compress the new ones and store them once per library; what a batch leaves
uncut (its last chunk, whose end is only the buffer's) the cut thread carries to the front
of the next one. Everything else (reads, truncates, sync points, close) first waits for
the cut and hash threads (``_settle``): the carried bytes then go back to the front of the
writing thread's buffer, and the stream is chunks plus that one uncut tail, as when the
cut ran on the writing thread. Reads put skeleton and
payloads back together, so the cartridge above sees the plain file's bytes at every offset.

Sync point (``fsync``): the stream's tail becomes a last chunk, the chunk writer is drained,
the new chunks are made durable and indexed (their packs fdatasync'd, then the index rows
committed: chunk_store.py) while the skeleton is fsync'd, then the recipe batch (with the dense
skeleton's length) is appended and fsync'd. A crash before the recipe is durable leaves
skeleton bytes past the recipe's length, cut at the next read-write open (a sparse
skeleton: record headers whose payload the recipe lacks; they fail their CRC and are cut
off like any torn tail).
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

import blake3
import pyfastcdc
import zstandard

from tape_formats.background_sync import BackgroundSync
from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_read_ahead import ReadAhead
from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.chunk_writer import ChunkWriter
from tape_formats.store.serial_thread import SerialThread
from tape_formats.store.stream_tail import HEADROOM, StreamTail, join

# FastCDC sizes: 128 KiB on average (64 KiB..512 KiB; FastCDC's mean is ~180 KiB), so a GB
# is ~5,500 index rows. Against 32 KiB (bench_dedup's tar, bench/README.md): zstd spends
# ~10% less CPU per byte on the bigger chunks and stores them ~5% smaller, a read decodes
# a quarter as many frames (~15% less CPU), and the weekly fulls' dedup loses little (a
# changed file costs a chunk or two more). Cartridges cut at 32 KiB keep reading (a recipe
# holds each chunk's length); a store's old chunks do not match the new cuts, so the first
# full after the change stores its data again.
AVG_CHUNK = 128 << 10
# FastCDC skips this much after each cut without hashing (its default is a quarter of the
# average): at half the average the gear hash runs over ~70% of the stream instead of ~80%
# (cut 0.28 -> 0.21 CPU s per GB alone; callgrind: 4.6% fewer instructions per GB written),
# chunks ~180 KiB on average instead of ~160, four weekly fulls as small.
MIN_CHUNK = AVG_CHUNK // 2
MAX_CHUNK = 4 * AVG_CHUNK  # (pyfastcdc's default): what a batch leaves uncut fits the
# headroom of a stream buffer, in front of the next batch
assert MAX_CHUNK <= HEADROOM
# The stream tail goes to the cut once it holds this much; the last chunk found is carried
# to the next batch (its end is only where the buffer ended, not a content-defined cut).
# A batch costs an index query, a hand-off to the compress pool and a few wake-ups made
# holding the GIL: 4 MiB against 1 MiB (bench_dedup's first full, three interleaved sets at
# load 4-11) took 3-6% less CPU per GB and 20-35% fewer voluntary context switches, for ~10
# MiB more buffers.
CUT_BATCH = 4 << 20
# Batches handed to the cut thread and not cut yet, the one being cut included: the writing
# thread copies the next batch while one is cut, and waits when it is this far ahead.
CUT_QUEUE = 2
# Cut batches handed to the hash thread and not hashed yet, the one being hashed included:
# the cut thread finds the next batch's chunks (FastCDC) while the last batch's are hashed
# (BLAKE3) and handed to the chunk writer, so the serial part of the write path is the
# longer of the two (~0.3 CPU s per GB each) instead of their sum, which could not always
# keep both compress threads fed (bench/README.md, bench_dedup.py). Two rather than one
# (a stream buffer more, 5.5 MiB): bench_dedup's first full on a quiet box, 20 interleaved
# runs each, median 592-603 -> 605-618 MB/s (a deeper chunk writer, IN_FLIGHT 6: about
# the same; 2 MiB cut batches: 530, worse).
HASH_QUEUE = 2
# Chunks fetched ahead of a read from a remote store (about 5 MiB at 128 KiB a chunk: the S3
# tier asks for them with ranged GETs of 2-4 MiB, bench/bench_s3_cache.py); local chunks are
# read ahead by chunk_read_ahead.py.
READ_AHEAD = 32
# Dense skeleton bytes read at once for reads: the headers of ~2,000 records.
SKELETON_WINDOW = 64 << 10
_NOTHING = memoryview(b"")


class DedupMedium:
    """One open dedup cartridge (see the module docstring). Owns ``fd``."""

    compresses = True
    # The file is the skeleton (32 bytes a record, fsync'd at sync points): nothing to pace,
    # where the cartridge's pacer would wake its thread every 8 MiB of payload and fdatasync
    # every 64 MiB. The chunk store paces its packs itself (chunk_store.py).
    paced = False

    def __init__(self, fd: int, recipe_path: Path, *, readonly: bool) -> None:
        self.fd = fd
        self._path = recipe_path
        self._readonly = readonly
        try:
            rec = recipes.load(recipe_path)
        except (OSError, recipes.RecipeError) as exc:
            raise StoreError(str(exc)) from None
        self._store_rel = rec.store
        self._store = ChunkStore((recipe_path.parent / rec.store).resolve())
        self._writer = ChunkWriter(self._store)
        self._dctx = zstandard.ZstdDecompressor()
        self._cdc = pyfastcdc.FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK,
                                      max_size=MAX_CHUNK)
        self._hold = self._store.hold()
        # extents: payload ranges of the file, with their stream offsets
        self._ext_off, self._ext_len = rec.ext_off, rec.ext_len
        self._ext_stream = _running(rec.ext_len)
        # chunks of the stream, then the pending tail not cut yet
        self._ch_len, self._ch_ids = rec.ch_len, rec.ch_ids
        self._ch_start = _running(rec.ch_len)
        self._chunked = sum(rec.ch_len)
        self._pending = StreamTail()
        self._stream_len = self._chunked  # payload bytes in the file (the stream's length)
        self._cutter: SerialThread[tuple[bytearray, int, int]] = SerialThread(
            self._cut_batch, CUT_QUEUE, f"dedup cut {recipe_path.stem}")
        self._carry = _NOTHING  # the cut thread's: what its last batch left uncut
        self._hasher: SerialThread[tuple[bytearray, int, list[tuple[int, int]], bool]] = \
            SerialThread(self._hash_batch, HASH_QUEUE, f"dedup hash {recipe_path.stem}")
        if sum(rec.ext_len) != self._chunked:
            raise StoreError(f"{recipe_path}: recipe extents and chunks disagree")
        self._good_end = rec.good_end
        self._rewrite = rec.good_end != rec.file_size  # a torn batch: rewrite at next sync
        self._saved_ext, self._saved_ch = len(self._ext_off), len(self._ch_ids)
        self._ahead = ReadAhead(self._store)
        # the chunk read last, its index and stream offset
        self._last_j, self._last, self._last_start = -1, _NOTHING, 0
        self._undrained = False  # chunks submitted to the writer since its last drain
        self._skeleton_flush: BackgroundSync | None = None  # fsyncs the skeleton (fsync)
        self._skel_window, self._skel_at = _NOTHING, 0  # dense: skeleton bytes read ahead
        self._dense = rec.skeleton is not None
        if self._dense:
            self._open_dense(rec.skeleton)
        else:
            self._end = os.fstat(fd).st_size
            # payloads past the skeleton's end were cut off (or never made durable with it)
            if self._ext_off and self._ext_off[-1] + self._ext_len[-1] > self._end:
                self._drop_from(self._end)
                self._end = os.fstat(fd).st_size
        self._saved_skel = self._skeleton_len()

    def _open_dense(self, durable: int) -> None:
        """The end of a dense skeleton: its length at the last recipe batch. Bytes past it
        were never durable (a crash after writes, before their sync point): cut them. A
        skeleton shorter than that was truncated (an overwrite) by a process that died
        before rewriting its recipe: the payloads past its end go too."""
        size = os.fstat(self.fd).st_size
        if size < durable:
            self._drop_from(self._file_offset(size))
            durable = size
        elif size > durable and not self._readonly:
            os.ftruncate(self.fd, durable)
        self._end = durable + self._streamed()

    def _streamed(self) -> int:
        """Payload bytes in the file (the data stream's length)."""
        return self._stream_len

    def _settle(self) -> None:
        """Wait for the cut thread (raising the error a batch met), and put what it left
        uncut back in front of the tail: the stream is ``_chunked`` bytes of chunks, then
        ``_pending``."""
        self._cutter.wait()  # (its last jobs put theirs to the hash thread)
        self._hasher.wait()
        if self._carry:
            self._pending.prepend(self._carry)
            self._carry = _NOTHING

    def _skeleton_len(self) -> int:
        return self._end - self._streamed() if self._dense else self._end

    def _payload_before(self, offset: int) -> int:
        """Payload bytes at file offsets below ``offset``."""
        i = bisect_right(self._ext_off, offset) - 1
        if i < 0:
            return 0
        return self._ext_stream[i] + min(self._ext_len[i], offset - self._ext_off[i])

    def _file_offset(self, at: int) -> int:
        """The lowest file offset whose byte is at ``at`` in the dense skeleton (the end of
        the skeleton bytes before payload ``i``, the first whose end is not below ``at``)."""
        ext_off, ext_stream = self._ext_off, self._ext_stream
        i = bisect_left(range(len(ext_off)), at, key=lambda k: ext_off[k] - ext_stream[k])
        return at + (ext_stream[i] if i < len(ext_off) else self._streamed())

    # -- reads ------------------------------------------------------------------------------
    def size(self) -> int:
        return self._end

    def pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self._end - offset))
        buf = bytearray(n)
        if n:
            self._fill(memoryview(buf), offset)
        return bytes(buf)

    def preadv(self, buffers: list, offset: int) -> int:
        """Filled in place, buffer after buffer (a record header and its payload, or the
        cartridge's read-ahead span): no copy beyond the chunks' own."""
        self._settle()
        if len(buffers) == 2 and self._dense and not self._undrained:
            n = self._read_record(buffers[0], buffers[1], offset)
            if n >= 0:
                return n
        n = max(0, min(sum(len(b) for b in buffers), self._end - offset))
        pos, left = offset, n
        for b in buffers:
            view = memoryview(b).cast("B")
            take = min(len(view), left)
            if take:
                self._fill(view[:take], pos)
            pos += take
            left -= take
        return n

    def _read_record(self, head: bytearray | memoryview, payload: bytearray | memoryview,
                     offset: int) -> int:
        """A dense cartridge's record read whole, the case of every block read: ``head`` the
        skeleton bytes right before payload ``i``, ``payload`` exactly that payload; -1 for
        any other shape (``_fill`` then takes it piece by piece)."""
        start, size, ext_off = offset + len(head), len(payload), self._ext_off
        i = bisect_right(ext_off, start) - 1
        if i < 0 or ext_off[i] != start or self._ext_len[i] != size or (
                i and ext_off[i - 1] + self._ext_len[i - 1] > offset):
            return -1
        stream = self._ext_stream[i]
        at = offset - stream - self._skel_at  # in the skeleton window
        skel = self._skel_window
        if at < 0 or at + len(head) > len(skel):
            skel, at = self._skeleton_view(offset - stream, len(head)), 0
            if len(skel) < len(head):
                return -1
        head[:] = skel[at:at + len(head)]
        skip = stream - self._last_start  # in the chunk read last, most often
        if 0 <= skip and skip + size <= len(self._last):
            payload[:] = self._last[skip:skip + size]
        else:
            self._read_stream(stream, memoryview(payload).cast("B"))
        return len(head) + size

    def _fill(self, out: memoryview, offset: int) -> None:
        """The file's bytes at [offset, offset + len(out)): payloads from the stream, the
        rest (record headers, filemarks) from the skeleton; a sparse one's payload holes are
        not read, a dense one's bytes for the whole range come with one pread."""
        self._settle()
        if self._undrained:  # chunks cut and not yet in their pack: wait for them
            self._writer.drain()
            self._undrained = False
        end = offset + len(out)
        ext_off, ext_len, ext_stream = self._ext_off, self._ext_len, self._ext_stream
        i = max(0, bisect_right(ext_off, offset) - 1)
        pos = offset
        skel: memoryview | None = None  # dense: the range's skeleton bytes, from skel_at
        skel_at = 0
        while pos < end:
            if i < len(ext_off) and ext_off[i] + ext_len[i] <= pos:
                i += 1
            elif i < len(ext_off) and ext_off[i] <= pos:  # inside payload i
                b = min(end, ext_off[i] + ext_len[i])
                self._read_stream(ext_stream[i] + pos - ext_off[i], out[pos - offset:b - offset])
                pos = b
                i += 1
            else:  # skeleton bytes up to the next payload
                b = min(end, ext_off[i]) if i < len(ext_off) else end
                part = out[pos - offset:b - offset]
                if not self._dense:
                    got = os.preadv(self.fd, [part], pos)
                else:
                    at = pos - (ext_stream[i] if i < len(ext_off) else self._streamed())
                    if skel is None:
                        skel_at = at
                        skel = self._skeleton_view(at, end - self._payload_before(end) - at)
                    src = skel[at - skel_at:at - skel_at + len(part)]
                    got = len(src)
                    part[:got] = src
                part[got:] = bytes(len(part) - got)  # past the skeleton's end: zeros
                pos = b

    def _skeleton_view(self, at: int, need: int) -> memoryview:
        """The dense skeleton's bytes from ``at`` on, at least ``need`` of them where the
        file has them: from the cached window (``SKELETON_WINDOW`` bytes, the headers of
        some 2,000 small records, read with one pread), which every write drops."""
        rel = at - self._skel_at
        if 0 <= rel and rel + need <= len(self._skel_window):
            return self._skel_window[rel:]
        self._skel_window = memoryview(os.pread(self.fd, max(need, SKELETON_WINDOW), at))
        self._skel_at = at
        return self._skel_window

    def _read_stream(self, pos: int, out: memoryview) -> None:
        at = 0
        while at < len(out):
            if pos >= self._chunked:
                src = self._pending.view()[pos - self._chunked:]
                take = min(len(out) - at, len(src))
                if take <= 0:
                    raise StoreError(f"{self._path}: data stream ends early")
                out[at:at + take] = src[:take]
            else:
                j = bisect_right(self._ch_start, pos) - 1
                data = self._chunk(j)
                skip = pos - self._ch_start[j]
                take = min(len(out) - at, len(data) - skip)
                out[at:at + take] = data[skip:skip + take]
            at += take
            pos += take

    def _chunk(self, j: int) -> memoryview:
        """Chunk ``j``; the last one asked for again (the next small record) from memory."""
        if j != self._last_j:
            self._last = memoryview(self._ahead.chunk(j, self._ch_ids, self._ch_len,
                                                      self._fetch))
            self._last_j, self._last_start = j, self._ch_start[j]
        return self._last

    def _fetch(self, j: int) -> bytes:
        """A chunk the local store lacks: from the S3 tier, asking for the next ones too."""
        if self._store.remote is not None:
            self._store.remote.prefetch(self._store, self._ch_ids[j + 1:j + 1 + READ_AHEAD])
        return self._store.get(self._ch_ids[j], self._ch_len[j], self._dctx)

    # -- writes -----------------------------------------------------------------------------
    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        """Header-sized writes (a record header, a filemark, the cartridge header): into
        the skeleton as they are, never over a payload."""
        at = offset
        if self._dense:
            i = bisect_right(self._ext_off, offset + len(data) - 1) - 1
            if i >= 0 and self._ext_off[i] + self._ext_len[i] > offset:
                raise StoreError(f"{self._path}: a write over a payload at offset {offset}")
            at = offset - (self._ext_stream[i] + self._ext_len[i] if i >= 0 else 0)
        self._skel_window = _NOTHING
        n = os.pwrite(self.fd, data, at)
        self._end = max(self._end, offset + n)
        return n

    def pwritev(self, buffers: list, offset: int) -> int:
        """A record: its header into the skeleton, its payload into the data stream."""
        if len(buffers) != 2:
            return self.pwrite(b"".join(bytes(b) for b in buffers), offset)
        head, payload = buffers
        if offset != self._end:
            raise StoreError(f"{self._path}: a dedup cartridge only appends at its end")
        self._skel_window = _NOTHING
        n = os.pwrite(self.fd, head, offset - self._streamed() if self._dense else offset)
        if n != len(head):
            return n
        start = offset + n
        self._ext_off.append(start)
        self._ext_len.append(len(payload))
        self._ext_stream.append(self._stream_len)
        if len(payload) > self._pending.room() and self._pending:
            self._hand_to_cut()  # (a big block: what is there goes first, as it is)
        self._pending.append(payload)
        self._stream_len += len(payload)
        self._end = start + len(payload)
        if len(self._pending) >= CUT_BATCH:
            self._hand_to_cut()
        return n + len(payload)

    def _hand_to_cut(self) -> None:
        """The tail's buffer to the cut thread (raises the error an earlier batch met)."""
        self._hold.acquire()  # before any chunk is looked up: the collector waits from here
        self._cutter.put(self._pending.take())

    def _cut_batch(self, batch: tuple[bytearray, int, int], final: bool = False) -> None:
        """Cut a buffer's bytes ``[start, end)``, behind what the last batch left uncut,
        into chunks, and hand them to the hash thread (``_hash_batch``); without ``final``
        the last chunk found is carried to the next batch (the buffer's end is not a
        content-defined cut). On the cut thread, or on a settled writer's (``final``: the
        caller then waits for the hash thread)."""
        buf, start, end = join(self._carry, *batch, self._pending.give_back)
        self._carry = _NOTHING
        view = memoryview(buf)[start:end]
        cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view)]  # (no view kept)
        if not final and cuts:
            cuts.pop()
        used = cuts[-1][0] + cuts[-1][1] if cuts else 0
        if used < len(view):  # (a copy: the buffer comes back to the writer once stored)
            self._carry = bytes(view[used:])
        view.release()
        if not cuts:
            self._pending.give_back(buf)
            return
        self._hasher.put((buf, start, cuts, final))

    def _hash_batch(self, job: tuple[bytearray, int, list[tuple[int, int]], bool]) -> None:
        """Hash the chunks cut from ``buf`` (at ``cuts``, from ``start`` on), hand them to
        the chunk writer (which stores the new ones behind this thread's back) and add them
        to the stream's chunks. On the hash thread, in the order the batches were cut."""
        buf, start, cuts, final = job
        view = memoryview(buf)
        pieces = [view[start + offset:start + offset + length] for offset, length in cuts]
        ids = [blake3.blake3(piece).digest() for piece in pieces]
        view.release()
        # The chunk writer keeps views of this buffer until they are stored, then gives it
        # back.
        self._writer.submit(ids, pieces, lambda: self._pending.give_back(buf), last=final)
        self._undrained = True
        for cid, (_offset, length) in zip(ids, cuts, strict=True):
            self._ch_start.append(self._chunked)
            self._ch_len.append(length)
            self._ch_ids.append(cid)
            self._chunked += length

    def truncate(self, length: int) -> None:
        self._settle()
        self._writer.drain()
        self._skel_window = _NOTHING
        if self._dense:
            self._drop_from(length)
            os.ftruncate(self.fd, length - self._streamed())
        else:
            os.ftruncate(self.fd, length)
            self._drop_from(length)
        self._end = length

    def _drop_from(self, length: int) -> None:
        """Forget the payload bytes at and past file offset ``length``."""
        i = bisect_right(self._ext_off, length - 1) if length else 0
        keep_ext = i
        stream_end = 0
        if i:
            last_end = self._ext_off[i - 1] + self._ext_len[i - 1]
            if last_end > length:
                self._ext_len[i - 1] = length - self._ext_off[i - 1]
            stream_end = self._ext_stream[i - 1] + self._ext_len[i - 1]
        if keep_ext == len(self._ext_off) and stream_end == self._chunked + len(self._pending):
            return
        del self._ext_off[keep_ext:], self._ext_len[keep_ext:], self._ext_stream[keep_ext:]
        if stream_end >= self._chunked:
            self._pending.cut_back(stream_end - self._chunked)
        else:
            j = bisect_right(self._ch_start, stream_end) - 1
            head = self._chunk(j)[:stream_end - self._ch_start[j]] if j >= 0 else b""
            self._pending.reset(head)
            drop = j if j >= 0 else 0
            if j >= 0 and self._ch_start[j] == stream_end:
                self._pending.reset()
            del self._ch_start[drop:], self._ch_len[drop:], self._ch_ids[drop:]
            self._chunked = stream_end - len(self._pending)
            self._ahead.forget()
            self._last_j, self._last = -1, _NOTHING
        self._stream_len = self._chunked + len(self._pending)
        self._rewrite = True
        self._saved_ext = min(self._saved_ext, len(self._ext_off))
        self._saved_ch = min(self._saved_ch, len(self._ch_ids))

    def fsync(self) -> None:
        """A sync point: chunks and skeleton, then the recipe once both are durable.

        The skeleton's fsync runs on a thread of its own while the last chunks are cut,
        compressed, flushed and indexed: a skeleton durable before its chunks is no other
        state than one durable before its recipe (bytes past the recipe's length, cut at
        the next read-write open), and the recipe, the sync point's commit, waits for both.
        One disk flush less at the end of each stream (bench/README.md, bench_dedup.py)."""
        if self._readonly:
            return
        self._settle()
        if not self._dense and os.fstat(self.fd).st_size < self._end:
            os.ftruncate(self.fd, self._end)  # a payload at the end is a hole: extend
        skeleton = self._skeleton_sync()
        skeleton.kick()
        try:
            if self._pending:
                self._hold.acquire()
                self._cut_batch(self._pending.take(), final=True)
                self._hasher.wait()
            self._writer.drain()  # every new chunk in its pack
            self._store.sync()  # (a chunk found in the index is durable already)
        finally:
            skeleton.wait()
        error = skeleton.take_error()
        if error is not None:
            raise error
        self._save_recipe()
        self._hold.release()

    def _skeleton_sync(self) -> BackgroundSync:
        """The thread that fsyncs the skeleton at sync points (started on first use)."""
        if self._skeleton_flush is None:
            self._skeleton_flush = BackgroundSync(self.fd, f"skeleton {self._path.stem}",
                                                  flush=os.fsync)
        return self._skeleton_flush

    def _save_recipe(self) -> None:
        skel = self._skeleton_len() if self._dense else None
        if self._rewrite:
            recipes.write_new(self._path, self._store_rel, self._extents(0), self._chunks(0),
                              skel)
            self._good_end = self._path.stat().st_size
            self._rewrite = False
        elif (self._saved_ext, self._saved_ch) != (len(self._ext_off), len(self._ch_ids)) or (
                self._dense and skel != self._saved_skel):
            data = recipes.batch(self._extents(self._saved_ext), self._chunks(self._saved_ch),
                                 skel)
            self._good_end = recipes.append(self._path, self._good_end, data)
        self._saved_ext, self._saved_ch = len(self._ext_off), len(self._ch_ids)
        self._saved_skel = self._skeleton_len()

    def _extents(self, start: int) -> list[tuple[int, int]]:
        return list(zip(self._ext_off[start:], self._ext_len[start:], strict=True))

    def _chunks(self, start: int) -> list[tuple[int, bytes]]:
        return list(zip(self._ch_len[start:], self._ch_ids[start:], strict=True))

    def close(self) -> None:
        self._cutter.close()
        self._hasher.close()
        self._writer.close()
        if self._skeleton_flush is not None:
            self._skeleton_flush.close()
        self._ahead.close()
        try:
            self._store.close()  # (rows it commits, if any, under the lock: not mid-run)
        finally:
            self._hold.release()
            os.close(self.fd)


def _running(lengths: array) -> array:
    """Start offsets of consecutive pieces of the given lengths."""
    out = array("q")
    total = 0
    for n in lengths:
        out.append(total)
        total += n
    return out


def create_recipe(cartridge: Path, store_root: Path, skeleton: int) -> Path:
    """Write the recipe of a new cartridge whose file holds ``skeleton`` bytes (its header:
    a dense skeleton) under a temporary name; the caller renames it into place
    (``recipe_path``) when the cartridge itself appears."""
    ChunkStore.create(store_root).close()  # (its index's connection is closed now, not by a
    # later garbage collection: sqlite3 connections sit in reference cycles)
    rel = os.path.relpath(store_root, cartridge.parent)
    tmp = cartridge.with_name(cartridge.name + ".recipe.new")
    recipes.write_new(tmp, rel, [], [], skeleton)
    return tmp
