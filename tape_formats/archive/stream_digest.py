"""The backup's stream digest: one sha256 that proves a whole pax stream without a second pass.

A backup hashes each regular file's data anyway (its sha256 goes into the trailer's file
index, which a single-file restore checks). A plain sha256 of the whole stream on top of that
hashed every content byte twice. The *member digest* (trailer format version 2) is built from
what is hashed anyway: sha256 over the stream as written, except that the data of each regular
file member is replaced by the 32-byte sha256 of that data::

    stream:  [hdr A][data A][pad A][hdr B][pad-less dir hdr][hdr C][data C][pad C][0 x 1024]
    digest:  sha256( hdr A | sha256(data A) | pad A | hdr B | ... | sha256(data C) | pad C | 0 x 1024 )

"Data" is exactly what the file index's sha256 covers: the member's stored content bytes
(a sparse file's data extents, after its sparse map block); everything else (ustar and pax
extended headers, global headers, sparse map blocks, block padding, the end-of-archive
blocks) goes in byte for byte. A reader that parses the stream knows where each member's
data starts and ends from the headers alone, so it recomputes the same digest while it
checks the members: a verify of the whole stream still proves every byte (a changed header
or padding byte changes the digest; a changed data byte changes its member's sha256).

Version 1 trailers hold :data:`PLAIN`, the sha256 of every stream byte; readers keep
accepting them (``ebm verify`` picks the kind from the trailer's format version).
"""

from __future__ import annotations

import hashlib

PLAIN = "sha256"  # trailer format version 1: sha256 of the stream's bytes
MEMBERS = "member-sha256"  # trailer format version 2: this module's digest


class StreamDigest:
    """The member digest of a pax stream, fed in stream order by the writer or the reader."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def meta(self, b: bytes | memoryview) -> None:
        """Stream bytes that are not a regular file's data (headers, padding, end blocks)."""
        self._h.update(b)

    def member(self, data_sha256: bytes) -> None:
        """The 32-byte sha256 of one regular file member's data, in its place in the stream."""
        self._h.update(data_sha256)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class StreamDigestBehind:
    """A :class:`StreamDigest` hashed on a worker thread, a chunk behind its feeder.

    The same digest of the same bytes in the same order: ``meta`` and ``member`` copy their
    bytes into a buffer (the caller may reuse its own right after, as ``pack_files``' feed
    buffer is), and each full buffer goes to one worker that hashes the chunks in the order
    given (hashlib releases the GIL). Why: at 200,000 small files the stream digest hashes
    ~400 MB of headers and padding, ~0.3-0.5 s of the writing thread, which is the backup's
    critical path while the second core has room. At most ``_AHEAD`` chunks wait (memory
    stays flat); ``hexdigest`` waits for them all. The worker ends with its executor (shut
    down in ``hexdigest``, or when an abandoned writer's digest is collected)."""

    __slots__ = ("_d", "_buf", "_pool", "_pending")

    _CHUNK = 1 << 20
    _AHEAD = 4

    def __init__(self) -> None:
        self._d = StreamDigest()
        self._buf = bytearray()
        self._pool = None
        self._pending: list = []

    def meta(self, b: bytes | memoryview) -> None:
        self._buf += b
        if len(self._buf) >= self._CHUNK:
            self._hand_off()

    member = meta  # 32 bytes into the same sha256, in their place

    def _hand_off(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="stream-digest")
        buf, self._buf = self._buf, bytearray()
        self._pending.append(self._pool.submit(self._d.meta, buf))
        while self._pending and (len(self._pending) > self._AHEAD or self._pending[0].done()):
            self._pending.pop(0).result()

    def hexdigest(self) -> str:
        for f in self._pending:
            f.result()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._buf:
            self._d.meta(self._buf)
            self._buf = bytearray()
        return self._d.hexdigest()
