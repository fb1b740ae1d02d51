"""The data mover: a pax stream in, fixed 256 KiB tape blocks out (and back).

Layout of one backup on tape (per cartridge it touches)::

    [header block] FM [data block 0..k] FM [trailer block(s)] FM
     tape file h        tape file h+1       tape file h+2

A backup that spans cartridges ends the data tape file on the first cartridge with a filemark
at early warning (or at EOD when the medium overflows outright) and starts the next cartridge
with a continuation header (same uuid, volume sequence > 0) followed by the rest of the same
data tape file, then the trailer. ``ebm_backup_volumes`` records, per cartridge, which stream
blocks it holds and at which logical object the first one lies, so a reader can LOCATE straight
to any block.

Block ``n`` of the stream always holds stream bytes ``n*BS .. (n+1)*BS``; encryption and
compression change a block's size on tape but never that mapping, so the file index needs only
stream offsets.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Protocol

from ebm.catalog import BLOCK_SIZE, Volume
from ebm.crypto import TRAILER_BASE, BlockAuthError, BlockCipher
from tape_formats.cartridge import (
    CorruptRecord,
    EndOfMedium,
    RecordKind,
    TapeCartridge,
)
from tape_formats.write_behind import DeferredWriteError


def _nothing() -> None:
    """A release for a block the cartridge may keep: nothing to give back."""


class MoverError(Exception):
    """A one-line data mover failure (names the cartridge, tape file and block)."""


class MediaProvider(Protocol):
    """Hands the writer its cartridges. ``next_volume`` returns a mounted cartridge positioned
    at its append point; ``release_volume`` unmounts it (``full``: no more appends)."""

    def next_volume(self, seq: int) -> tuple[str, TapeCartridge]: ...
    def release_volume(self, barcode: str, cart: TapeCartridge, *, full: bool) -> None: ...


@dataclass
class _Vol:
    seq: int
    barcode: str
    cart: TapeCartridge
    first_object: int
    first_file: int
    data_object: int | None = None
    first_block: int | None = None
    last_block: int | None = None
    end_object: int = 0
    end_file: int = 0
    full: bool = False


@dataclass
class WrittenVolume:
    volume: Volume
    append_at: int
    full: bool


@dataclass
class TapeWriter:
    """A write-only stream (``write``/``tell``) that becomes the data tape file.

    Why a stream: the archive writer and translators only need ``.write``/``.tell``; the mover
    owns blocking, encryption and spanning. It does not hash: the stream digest comes from
    the PaxWriter, built from the per-file sha256 it computes anyway (``stream_digest.py``).
    A caller's bytes are copied once, into a block buffer that is then handed to the writer
    thread as it is (the thread seals it when encrypting and queues it on the cartridge's
    write buffer, whose threads compress and append it while the producer fills the next
    one; the buffer goes back to a small pool once stored): no block is copied a second
    time on its way to the cartridge.
    """

    provider: MediaProvider
    header_for: Callable[[int], bytes]  # volume seq -> encoded header block
    cipher: BlockCipher | None = None
    compress: bool = True
    block_size: int = BLOCK_SIZE
    on_block: Callable[[int], None] | None = None  # progress: bytes written so far
    threaded: bool = True  # seal/compress/write blocks on a second thread (zstd and AES drop the GIL)
    volumes: list[_Vol] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._buf = bytearray(self.block_size)
        self._fill = 0
        self._offset = 0
        self._block = 0
        self._vol: _Vol | None = None
        self._q: queue.Queue | None = None
        self._spares: list[bytearray] = []  # block buffers the writer thread gave back
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- volumes ---------------------------------------------------------------------------
    def start(self) -> None:
        """Mount the first cartridge and write the header tape file."""
        self._open_volume(0)

    def _open_volume(self, seq: int) -> None:
        barcode, cart = self.provider.next_volume(seq)
        pos = cart.position
        vol = _Vol(seq, barcode, cart, pos, cart.filemarks_before(pos))
        self.volumes.append(vol)
        self._vol = vol
        try:
            cart.write_block(self.header_for(seq), compress=False)
            cart.write_filemarks(1, sync=False)
        except EndOfMedium:
            raise MoverError(f"cartridge {barcode} has no room even for a backup header") from None

    def _close_volume(self, *, full: bool) -> None:
        vol = self._vol
        assert vol is not None
        vol.end_object = vol.cart.position
        # the tape file of the last object we wrote (a filemark belongs to the file it ends)
        vol.end_file = vol.cart.filemarks_before(max(vol.first_object, vol.end_object - 1)) + 1
        vol.full = full
        vol.cart.sync()
        self.provider.release_volume(vol.barcode, vol.cart, full=full)
        self._vol = None

    def _span(self, *, wrote_filemark: bool) -> None:
        vol = self._vol
        assert vol is not None
        if not wrote_filemark:
            try:
                vol.cart.write_filemarks(1, sync=True)
            except EndOfMedium:
                pass  # the data file then ends at EOD on this cartridge; the reader knows
        self._close_volume(full=True)
        self._open_volume(vol.seq + 1)

    # -- the stream ------------------------------------------------------------------------
    def tell(self) -> int:
        return self._offset

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` to the stream. The copies into block buffers go through a
        memoryview: CPython 3.11's ``bytearray[a:b] = memoryview`` first copies the view into
        a temporary bytearray (a second memcpy, and an mmap for a large block)."""
        mv = memoryview(data).cast("B")
        n = len(mv)
        bs = self.block_size
        pos = 0
        if self._fill:
            take = min(bs - self._fill, n)
            memoryview(self._buf)[self._fill:self._fill + take] = mv[:take]
            self._fill += take
            pos = take
            if self._fill == bs:
                self._emit_buffer(bs)
                self._fill = 0
        while n - pos >= bs:  # aligned whole blocks go straight from the caller's buffer
            self._emit(mv[pos:pos + bs])
            pos += bs
        if pos < n:
            rest = n - pos
            memoryview(self._buf)[:rest] = mv[pos:]
            self._fill = rest
        self._offset += n
        return n

    def _emit(self, block: memoryview) -> None:
        """One block of the caller's bytes (which the caller reuses): copied once, into a
        block buffer handed on as it is."""
        if not self.threaded:
            self._block += 1
            self._seal_and_put(block, self._block - 1)
            return
        buf = self._spare()
        memoryview(buf)[:len(block)] = block
        self._hand_off(buf, len(block))

    def _emit_buffer(self, length: int) -> None:
        """The first ``length`` bytes of the block buffer as the next block: handed on as
        it is (threaded), a spare buffer taking its place."""
        if not self.threaded:
            self._emit(memoryview(self._buf)[:length])
            return
        buf, self._buf = self._buf, self._spare()
        self._hand_off(buf, length)

    def _spare(self) -> bytearray:
        try:
            return self._spares.pop()  # list.pop/append are atomic: the writer thread appends
        except IndexError:
            return bytearray(self.block_size)

    def _hand_off(self, buf: bytearray, length: int) -> None:
        number = self._block
        self._block += 1
        if self._thread is None:
            self._q = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, name="tape-writer", daemon=True)
            self._thread.start()
        if self._error is not None:
            raise self._error
        assert self._q is not None
        self._q.put((buf, length, number))

    def _drain(self) -> None:
        """Writer thread: blocks in order; the first error stops it and is re-raised later."""
        assert self._q is not None
        while True:
            item = self._q.get()
            if item is None:
                return
            buf, length, number = item
            if self._error is not None:
                continue
            block = buf if length == len(buf) else memoryview(buf)[:length]
            try:  # the buffer goes back to the pool once the cartridge holds no reference
                self._seal_and_put(block, number, release=partial(self._spares.append, buf))
            except BaseException as e:  # re-raised in the producer thread
                self._error = e

    def _join(self) -> None:
        if self._thread is not None:
            assert self._q is not None
            self._q.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def _seal_and_put(self, block: bytes | memoryview, number: int,
                      release: Callable[[], object] | None = None) -> None:
        """Data block ``number``: sealed when encrypting, then put on tape. ``release``
        (threaded mode: the block is the mover's own buffer) is called once nothing refers to
        ``block`` any more; without it the block is stored before this returns."""
        if self.cipher is not None:
            payload: bytes | memoryview = self.cipher.seal(number, block, compress=self.compress)
            compress = False
            if release is not None:  # the sealed copy is all the cartridge keeps
                release()
                release = _nothing
        else:
            payload, compress = block, self.compress
        self._put(payload, compress, data_block=number, release=release)
        if self.on_block is not None:
            self.on_block((number + 1) * self.block_size)

    def _put(self, payload: bytes | memoryview, compress: bool, data_block: int | None,
             release: Callable[[], object] | None = None) -> None:
        """Write one block on the current volume, spanning to the next when it is full.

        A data block that only a disk error could keep off this volume (before early
        warning, not its first on the volume) is queued on the cartridge's write buffer when
        the caller gives ``release``: the buffer's threads compress and append it (two
        compressing at once when blocks pile up, as ``zstd -T0`` does) while this thread
        takes the next block. Anything else first waits for the queued blocks (their disk
        error, if any, is a MoverError here) and is written at once."""
        vol = self._vol
        assert vol is not None
        queue_block = getattr(vol.cart, "queue_block", None)  # a remote drive has none
        if (release is not None and data_block is not None and vol.data_object is not None
                and queue_block is not None
                and queue_block(payload, compress=compress, done=lambda _data: release())):
            vol.last_block = data_block
            return
        self._flush_queued()
        self._put_now(payload, compress, data_block)
        if release is not None:
            release()

    def _flush_queued(self) -> None:
        """Wait for the blocks queued on the current volume; their disk error is ours."""
        vol = self._vol
        assert vol is not None
        flush = getattr(vol.cart, "flush_writes", None)
        if flush is None:
            return
        try:
            flush()
        except DeferredWriteError as e:
            raise MoverError(f"cartridge {vol.barcode}: {e}") from None

    def _put_now(self, payload: bytes | memoryview, compress: bool, data_block: int | None) -> None:
        for _attempt in range(3):
            vol = self._vol
            assert vol is not None
            try:
                pos = vol.cart.position
                res = vol.cart.write_block(payload, compress=compress)
            except EndOfMedium:
                self._span(wrote_filemark=False)
                continue
            if data_block is not None:
                if vol.data_object is None:
                    vol.data_object, vol.first_block = pos, data_block
                vol.last_block = data_block
            if res.early_warning:
                if data_block is not None:
                    vol.cart.write_filemarks(1, sync=True)
                    self._span(wrote_filemark=True)
                else:
                    vol.full = True
            return
        raise MoverError("no cartridge in the pool could take the block (all too small?)")

    def finish_data(self) -> tuple[int, int]:
        """Flush the last short block and end the data tape file; returns (stream size,
        block count)."""
        if self._fill:
            self._emit_buffer(self._fill)
            self._fill = 0
        self._join()
        self._flush_queued()
        vol = self._vol
        assert vol is not None
        if vol.data_object is None and self._block == 0:
            vol.data_object, vol.first_block, vol.last_block = vol.cart.position, 0, -1
        vol.cart.write_filemarks(1, sync=False)
        return self._offset, self._block

    def write_trailer(self, trailer: bytes | IO[bytes]) -> list[WrittenVolume]:
        """Write the trailer tape file (bytes, or a file read from where it stands), sync
        (the backup is durable from here), release."""
        bs = self.block_size
        src = io.BytesIO(trailer) if isinstance(trailer, bytes | bytearray) else trailer
        chunk = src.read(bs)
        i = 0
        while True:
            payload = self.cipher.seal(TRAILER_BASE + i, chunk) if self.cipher else chunk
            self._put(payload, self.cipher is None, data_block=None)
            chunk = src.read(bs)
            if not chunk:
                break
            i += 1
        vol = self._vol
        assert vol is not None
        vol.cart.write_filemarks(1, sync=True)
        self._close_volume(full=vol.full or vol.cart.at_early_warning)
        out = []
        for v in self.volumes:
            out.append(WrittenVolume(
                Volume(0, v.seq, v.barcode, v.first_file, max(v.first_file, v.end_file - 1),
                       v.first_object, v.end_object, v.data_object, v.first_block, v.last_block),
                append_at=v.end_object, full=v.full))
        return out

    def abort(self) -> None:
        """Release whatever is mounted; the torn tail stays past the append point."""
        try:
            self._join()
        except BaseException:
            pass
        if self._vol is not None:
            try:
                self.provider.release_volume(self._vol.barcode, self._vol.cart, full=False)
            finally:
                self._vol = None


class VolumeOpener(Protocol):
    def open(self, barcode: str) -> TapeCartridge: ...
    def close(self, barcode: str, cart: TapeCartridge) -> None: ...


class TapeReader:
    """A read-only stream over a backup's data tape file, LOCATEing straight to any block.

    ``blocks_read`` counts tape blocks read, so tests can prove a single-file restore touched
    only that file's blocks.
    """

    def __init__(self, volumes: list[Volume], opener: VolumeOpener, size: int,
                 cipher: BlockCipher | None = None, block_size: int = BLOCK_SIZE) -> None:
        self.volumes = [v for v in volumes if v.data_object is not None]
        self.opener = opener
        self.size = size
        self.cipher = cipher
        self.bs = block_size
        self.blocks_read = 0
        self._buf = bytearray(block_size + 4096)
        self._cur: tuple[Volume, TapeCartridge] | None = None
        self._offset = 0
        self._block_no = -1
        self._block: memoryview | bytes = b""

    def close(self) -> None:
        if self._cur is not None:
            self.opener.close(self._cur[0].barcode, self._cur[1])
            self._cur = None

    def __enter__(self) -> TapeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._offset
        elif whence == 2:
            offset += self.size
        self._offset = max(0, offset)
        return self._offset

    def _volume_for(self, n: int) -> Volume:
        for v in self.volumes:
            if v.first_block is not None and v.last_block is not None and v.first_block <= n <= v.last_block:
                return v
        raise MoverError(f"block {n} of the backup is on no recorded cartridge")

    def _load(self, n: int) -> None:
        vol = self._volume_for(n)
        if self._cur is None or self._cur[0].seq != vol.seq:
            self.close()
            self._cur = (vol, self.opener.open(vol.barcode))
        cart = self._cur[1]
        obj = vol.data_object + (n - vol.first_block)  # type: ignore[operator]
        where = f"cartridge {vol.barcode} file {vol.first_file + 1} block {n - vol.first_block}"  # type: ignore[operator]
        if cart.position != obj:
            cart.locate(obj)
        try:
            res = cart.read_block(memoryview(self._buf))
        except CorruptRecord:
            raise MoverError(f"{where} is corrupt") from None
        self.blocks_read += 1
        if res.kind != RecordKind.DATA:
            raise MoverError(f"{where}: expected a data block, found {res.kind.name.lower()}")
        data = res.data
        if self.cipher is not None:
            try:
                data = self.cipher.open_block(n, data, where)
            except BlockAuthError as e:
                raise MoverError(str(e)) from None
        want = min(self.bs, self.size - n * self.bs)
        if len(data) != want:
            raise MoverError(f"{where} is corrupt (length {len(data)}, expected {want})")
        self._block_no, self._block = n, data

    def readinto(self, b: bytearray | memoryview) -> int:
        out = memoryview(b).cast("B")
        done = 0
        while done < len(out) and self._offset < self.size:
            n, off = divmod(self._offset, self.bs)
            if n != self._block_no:
                self._load(n)
            take = min(len(out) - done, len(self._block) - off)
            out[done:done + take] = self._block[off:off + take]
            done += take
            self._offset += take
        return done

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._offset
        buf = bytearray(max(0, min(size, self.size - self._offset)))
        got = self.readinto(buf)
        return bytes(buf[:got])


def read_trailer_blocks(cart: TapeCartridge, cipher: BlockCipher | None, where: str) -> bytes:
    """Read a trailer tape file from the current position up to its filemark."""
    buf = bytearray(BLOCK_SIZE + 4096)
    parts: list[bytes] = []
    i = 0
    while True:
        try:
            res = cart.read_block(memoryview(buf))
        except CorruptRecord:
            raise MoverError(f"{where} trailer block {i} is corrupt") from None
        if res.kind != RecordKind.DATA:
            break
        data = bytes(res.data)
        if cipher is not None:
            try:
                data = cipher.open_block(TRAILER_BASE + i, data, f"{where} trailer block {i}")
            except BlockAuthError as e:
                raise MoverError(str(e)) from None
        parts.append(data)
        i += 1
    return b"".join(parts)
