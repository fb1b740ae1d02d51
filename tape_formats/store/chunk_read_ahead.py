"""Read-ahead of a dedup cartridge's chunks, in recipe order, on a thread of its own.

A sequential read (a restore) wants the chunks of the stream one after the other. They are
fetched in *windows* of ``WINDOW`` consecutive chunks of the recipe: the store reads records
adjacent in a pack with one pread and decompresses them (chunk_store.read_many; zstd and
pread release the GIL), and while the reader consumes window ``w`` the thread already
reads up to ``w + AHEAD``: a hand-over between threads can take milliseconds on a busy
machine, so the reader should find its next window done rather than wait for one. Random
access (a locate) costs one window. Decoded windows are kept from the previous one (a block
spans several chunks, a chunk several blocks, so reads step back a little) to the last one
asked for: about (AHEAD + 2) MiB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

from tape_formats.store.chunk_store import ChunkStore

WINDOW = 8  # chunks per window: about 1 MiB of stream at 128 KiB a chunk (dedup_medium.py)
AHEAD = 3  # windows read ahead of the one being read


class ReadAhead:
    """Decoded chunks of one cartridge's stream, by index in its recipe."""

    def __init__(self, store: ChunkStore) -> None:
        self._store = store
        self._pool: ThreadPoolExecutor | None = None
        self._dctx = zstandard.ZstdDecompressor()  # the thread's own (one thread)
        self._windows: dict[int, Future[list[bytes | None]]] = {}

    def chunk(self, j: int, ids: Sequence[bytes], lengths: Sequence[int],
              fetch: Callable[[int], bytes]) -> bytes:
        """Chunk ``j`` of the recipe ``ids``/``lengths``; ``fetch(j)`` for one the store does
        not hold locally (the S3 tier)."""
        w = j // WINDOW
        window = self._window(w, ids, lengths)
        for ahead in range(w + 1, w + 1 + AHEAD):
            if ahead * WINDOW < len(ids):
                self._window(ahead, ids, lengths)
        for old in [k for k in self._windows if not w - 1 <= k <= w + AHEAD]:
            self._windows.pop(old).cancel()
        got = window.result()
        i = j - w * WINDOW
        if i >= len(got):  # read before chunk j was cut: read the window again
            self._windows.pop(w)
            got = self._window(w, ids, lengths).result()
        data = got[i]
        if data is None:
            data = got[i] = fetch(j)
        return data

    def _window(self, w: int, ids: Sequence[bytes],
                lengths: Sequence[int]) -> Future[list[bytes | None]]:
        window = self._windows.get(w)
        if window is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="chunk-read-ahead")
            part = slice(w * WINDOW, (w + 1) * WINDOW)
            window = self._pool.submit(self._store.read_many, ids[part], lengths[part],
                                       self._dctx)
            self._windows[w] = window
        return window

    def forget(self) -> None:
        """Drop every window (the recipe was cut: the same index may be another chunk)."""
        for window in self._windows.values():
            window.cancel()
        self._windows.clear()

    def close(self) -> None:
        self.forget()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
