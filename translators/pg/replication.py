"""A base backup taken through the replication protocol in the EBM's own process (PostgreSQL
15 and later), instead of through a ``pg_basebackup`` child writing a tar into a pipe.

Why: pg_basebackup only moves the server's tar from its socket into our pipe; on a two-core
machine shared with the server's walsender that process, its pipe writes and our pipe reads
cost as much CPU per GB as the EBM's own sha256, and each hand-over through the pipe is a
context switch. Read from the socket here, the bytes are copied once into a 1 MiB buffer and
go straight to the tar reader.

The protocol (``BASE_BACKUP (...)`` on a ``replication=true`` connection, PostgreSQL 15+):
a result set with the start LSN and timeline, one with the tablespaces (a single row with a
NULL oid: only the data directory; more rows are refused, as ``pg_basebackup -D - -Ft``
refuses them), then one COPY OUT whose CopyData messages each start with a type byte:
``n`` a new archive (its name and tablespace location), ``d`` archive or manifest bytes,
``p`` progress, ``m`` the manifest starts. The archive is a whole tar (the server writes
its end-of-archive blocks); the manifest follows it. After the COPY, a result set with the
end LSN and timeline. The options are pg_basebackup's for ``-Ft -X fetch
--checkpoint=fast --label=ebm``: ``WAL`` puts the WAL from start to end into ``pg_wal`` of
the archive, ``WAIT false`` (the translator itself waits for the end segment's archiving),
``MANIFEST 'yes'``, ``TABLESPACE_MAP`` (as pg_basebackup -Ft asks).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import tempfile
import threading
from typing import IO, Any

from translators.base import TranslatorError

from .server import connect
from .source import PgSource
from .wal import parse_lsn

CHUNK = 1 << 20  # what one read hands the tar reader (the server sends 32 KiB messages)
AHEAD = 4  # chunks the read-ahead thread may hold
SLACK = 64 << 10  # room past CHUNK for the message that crosses it
MANIFEST_IN_MEMORY = 64 << 20  # a larger manifest (millions of files) spills to a temp file
COMMAND = ("BASE_BACKUP (LABEL 'ebm', CHECKPOINT 'fast', WAL true, WAIT false, "
           "TABLESPACE_MAP true, MANIFEST 'yes')")
MIN_SERVER = 150000  # the typed CopyData stream above; older servers: pg_basebackup


class BaseBackupStream:
    """One running base backup: :meth:`read` gives the archive's tar bytes (a byte source
    for :class:`~tape_formats.archive.PaxReader`), :meth:`finish` the rest of the COPY (the
    manifest) and the end LSN. ``close`` at any point aborts the backup on the server."""

    def __init__(self, src: PgSource) -> None:
        self._conn = connect(src, replication="true")
        self._pq = self._conn.pgconn
        self._pq.nonblocking = 0  # we wait for each message; psycopg's own loop is not used
        self._status = _pq_module().ExecStatus
        self._state = "before"  # then "archive" (from its 'n'), "after" (from the 'm')
        self._copy_done = False
        self._end: Any = None  # the result set after the COPY: the end LSN
        self.manifest: IO[bytes] | None = None
        self.stop_lsn = 0
        try:
            self._start()
        except BaseException:
            self._conn.close()
            raise
        # Reading the socket (libpq, GIL released) overlaps the consumer's hashing and
        # writing, as the pg_basebackup process did; a few chunks ahead at most.
        self._ahead: queue.Queue[memoryview | BaseException] = queue.Queue(AHEAD)
        self._stop = False
        self._ended = False
        self._thread = threading.Thread(target=self._read_ahead, name="pg-basebackup-read",
                                        daemon=True)
        self._thread.start()

    def _fail(self, what: str) -> TranslatorError:
        msg = " ".join(self._pq.get_error_message().split()) or "no reason given"
        return TranslatorError(f"base backup failed ({what}): {msg.removeprefix('ERROR: ')}")

    def _result(self, what: str) -> Any:
        res = self._pq.get_result()
        if res is None or res.status not in (self._status.TUPLES_OK, self._status.COPY_OUT):
            raise self._fail(what)
        return res

    def _start(self) -> None:
        try:
            self._pq.send_query(COMMAND.encode())
        except Exception:  # psycopg.OperationalError, with libpq's message
            raise self._fail("sending BASE_BACKUP") from None
        self._result("starting")  # the start LSN, which backup_label also gives
        spaces = self._result("listing tablespaces")
        if spaces.ntuples != 1 or spaces.get_value(0, 0) is not None:
            raise TranslatorError("the cluster has tablespaces outside its data directory: "
                                  "a base backup of one archive cannot hold them")
        if self._result("starting the copy").status != self._status.COPY_OUT:
            raise self._fail("starting the copy")

    def _message(self) -> memoryview | None:
        """The next CopyData message (type byte first), None once the COPY ended."""
        if self._copy_done:
            return None
        try:
            n, data = self._pq.get_copy_data(0)
        except Exception as exc:  # psycopg.OperationalError: the server or the link failed
            why = " ".join(str(exc).split()).split(" This probably means")[0]
            raise TranslatorError(f"base backup failed: {why}") from None
        if n == -1:  # the COPY ended: normally, or with the server's error
            self._copy_done = True
            self._end = self._pq.get_result()
            if self._end is None or self._end.status != self._status.TUPLES_OK:
                raise self._fail("streaming")
            return None
        if n < 1:
            raise TranslatorError("base backup failed: an empty message in the COPY stream")
        return data

    def read(self, n: int = CHUNK) -> memoryview:
        """The archive's next chunk (about ``CHUNK`` bytes, from the read-ahead thread), in a
        buffer of its own (the tar reader keeps views of it); empty at the archive's end."""
        if self._ended:
            return memoryview(b"")
        item = self._ahead.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
        return item

    def _read_ahead(self) -> None:
        """Read-ahead thread: chunks into the queue until the archive ends or :meth:`close`
        stops it; an error goes into the queue in the chunk's place."""
        try:
            while not self._stop:
                chunk = self._chunk(CHUNK)
                self._ahead.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._ahead.put(exc)

    def _chunk(self, n: int) -> memoryview:
        """Up to about ``max(n, CHUNK)`` bytes of the archive, at least one message's worth;
        empty at the archive's end (the manifest's start, or the end of the COPY)."""
        want = max(n, CHUNK)
        buf = bytearray(want + SLACK)
        view = memoryview(buf)
        filled = 0
        while filled < want and self._state != "after":
            msg = self._message()
            if msg is None:
                break
            kind = msg[0]
            if kind == 0x64 and self._state == "archive":  # 'd': archive bytes
                size = len(msg) - 1
                if filled + size > len(buf):  # larger than any message the server sends
                    view.release()
                    buf.extend(bytes(filled + size - len(buf)))
                    view = memoryview(buf)
                view[filled:filled + size] = msg[1:]
                filled += size
            elif kind == 0x6E and self._state == "before":  # 'n': the (only) archive
                self._state = "archive"
            elif kind == 0x6E:
                raise TranslatorError("the server sent a second archive (tablespaces)")
            elif kind == 0x6D:  # 'm': the manifest follows the archive
                self._state = "after"
                self.manifest = tempfile.SpooledTemporaryFile(MANIFEST_IN_MEMORY)
            elif kind != 0x70:  # 'p' (progress) is ignored
                raise TranslatorError(f"base backup failed: unexpected message {chr(kind)!r}")
        return view[:filled]

    def finish(self) -> None:
        """Read past the archive's end: the manifest into :attr:`manifest` (rewound), then
        the end LSN into :attr:`stop_lsn`."""
        while self.read(CHUNK):
            pass  # anything after the tar's end-of-archive blocks
        self._thread.join()
        while (msg := self._message()) is not None:
            if msg[0] == 0x6D and self.manifest is None:
                self.manifest = tempfile.SpooledTemporaryFile(MANIFEST_IN_MEMORY)
            elif msg[0] == 0x64 and self.manifest is not None:
                self.manifest.write(msg[1:])
            elif msg[0] != 0x70:
                raise TranslatorError(f"base backup failed: unexpected message {chr(msg[0])!r}")
        if self._end.ntuples != 1:
            raise self._fail("ending")
        self.stop_lsn = parse_lsn(self._end.get_value(0, 0).decode())
        while (res := self._pq.get_result()) is not None:
            if res.status not in (self._status.COMMAND_OK, self._status.TUPLES_OK):
                raise self._fail("ending")
        if self.manifest is not None:
            self.manifest.seek(0)

    def close(self) -> None:
        """Stop the read-ahead thread and drop the connection (an unfinished backup is
        aborted by the server)."""
        if self._thread.is_alive():
            self._stop = True
            with contextlib.suppress(OSError):  # a wait for the server's next message ends
                with socket.socket(fileno=os.dup(self._pq.socket)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            while self._thread.is_alive():  # it may wait to put a chunk: make room
                with contextlib.suppress(queue.Empty):
                    self._ahead.get(timeout=0.05)
        self._conn.close()
        if self.manifest is not None:
            self.manifest.close()


def _pq_module() -> Any:
    from psycopg import pq

    return pq
