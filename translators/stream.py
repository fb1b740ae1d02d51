"""The stream translator: one byte stream (a file, a block device, a pipe or stdin) as-is.

For when an application already has its own export (``pg_dump``, ``mysqldump``, a VM image):
``pg_dump db | ebm backup --translator stream --source -``. There is nothing to convert, so the
archive simply carries the bytes:

* a source of known size (regular file, block device) becomes one pax member ``<name>``,
  read between two ``fstat`` calls and retried when it changes while being read, like the
  filesystem translator;
* a source of unknown size (pipe, FIFO, stdin ``-``) becomes members ``<name>.part000000``,
  ``<name>.part000001``, ... of at most ``part_size`` bytes each (a pax header needs the size
  before the data, and a part is the most the translator buffers).

Without the EBM: ``dd if=/dev/nst0 bs=256k | tar -xOf - > stream`` concatenates the parts in
order. Restore writes ``<target>/<name>`` (parts joined). There are no incrementals: every
backup is complete (``supports_incremental = False``); the state records size and sha256.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter, check_member_path

from .base import (
    BackupResult,
    Progress,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
    delete_stale_members,
    file_row,
    stat_source,
)

CHUNK = 1024 * 1024
STATE_FORMAT = "ebm-stream-state/1"


def _stream_name(source: str) -> str:
    if source == "-":
        return "stdin"
    name = os.path.basename(os.path.normpath(source)) or "stream"
    return name if name not in (".", "..") else "stream"


class StreamTranslator(Translator):
    name = "stream"
    version = "1.0"
    supports_incremental = False
    part_size = 64 * CHUNK
    retries = 3

    def validate_source(self, source: str) -> None:
        if source == "-":
            return
        if not source:
            raise TranslatorError("no source stream given (a path, or - for stdin)")
        st = stat_source(source)
        if stat.S_ISDIR(st.st_mode):
            raise TranslatorError(f"source {source} is a directory (use the filesystem translator)")
        if not os.access(source, os.R_OK):
            raise TranslatorError(f"source {source} is not readable")

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        self.validate_source(source)
        name = _stream_name(source)
        warnings: list[str] = []
        if source == "-":
            fd, close = sys.stdin.buffer.fileno(), False
        else:
            fd, close = os.open(source, os.O_RDONLY | os.O_CLOEXEC), True
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                rows, total, digest = self._sized(fd, name, writer, warnings)
            elif stat.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
                rows, total, digest = self._sized(fd, name, writer, warnings, size=size)
            else:
                rows, total, digest = self._parts(fd, name, writer, progress)
        finally:
            if close:
                os.close(fd)
        members = [r.path for r in rows]
        rows += delete_stale_members(parent_state, members, writer)
        if progress is not None:
            progress(Progress("backup", len(members), len(members), total, total, name))
        state = {"format": STATE_FORMAT, "name": name, "size": total, "sha256": digest,
                 "created_ns": time.time_ns(), "members": members}
        return BackupResult(state=state, entries=rows, warnings=warnings, level_hint="baseline")

    def _entry(self, path: str, size: int) -> ArchiveEntry:
        return ArchiveEntry(path=path, kind="file", size=size, mode=0o600, uid=os.getuid(),
                            gid=os.getgid(), mtime_ns=time.time_ns())

    def _sized(self, fd: int, name: str, writer: PaxWriter, warnings: list[str],
               size: int | None = None) -> tuple[list[IndexEntry], int, str]:
        for attempt in range(self.retries + 1):
            st0 = os.fstat(fd)
            n = st0.st_size if size is None else size
            entry = self._entry(name, n)
            entry.mtime_ns = st0.st_mtime_ns
            entry.mode = stat.S_IMODE(st0.st_mode)
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                loc = writer.add(entry, f)
            st1 = os.fstat(fd)
            stable = (st0.st_size, st0.st_mtime_ns, st0.st_ctime_ns) == (
                st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns)
            if (stable and not loc.short) or size is not None:
                break
            if attempt == self.retries:
                warnings.append(f"{name} kept changing while being read; its copy may be inconsistent")
        return [file_row(entry, loc, torn=bool(warnings))], n, loc.sha256 or hashlib.sha256().hexdigest()

    def _parts(self, fd: int, name: str, writer: PaxWriter,
               progress: ProgressCallback | None) -> tuple[list[IndexEntry], int, str]:
        rows: list[IndexEntry] = []
        whole = hashlib.sha256()
        total = 0
        buf = bytearray(self.part_size)
        view = memoryview(buf)
        part = 0
        while True:
            got = 0
            while got < len(buf):
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
            if got == 0 and part > 0:
                break
            entry = self._entry(f"{name}.part{part:06d}", got)
            loc = writer.add(entry, view[:got])
            whole.update(view[:got])
            total += got
            rows.append(file_row(entry, loc))
            part += 1
            if progress is not None:
                progress(Progress("backup", part, None, total, None, entry.path))
            if got < len(buf):
                break
        return rows, total, whole.hexdigest()

    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        target = Path(target)
        target.mkdir(parents=True, exist_ok=True)
        stats = RestoreStats()
        out = None
        out_name = None
        tmp_path = None
        try:
            for entry, data in entries:
                if entry.deleted or entry.kind != "file":
                    continue
                base, dot, suffix = entry.path.rpartition(".part")
                name = base if dot and suffix.isdigit() else entry.path
                check_member_path(name)
                if "/" in name:
                    raise TranslatorError(f"unexpected member {entry.path!r} in a stream backup")
                if select is not None and not select(name):
                    stats.skipped += 1
                    continue
                if name != out_name:
                    if out is not None:
                        out.close()
                        os.replace(tmp_path, target / out_name)
                    out_name = name
                    tmp_path = target / f".{name}.ebm-partial"
                    out = open(tmp_path, "wb")
                    stats.files += 1
                    stats.entries += 1
                while chunk := data.read(CHUNK):
                    out.write(chunk)
                    stats.bytes += len(chunk)
                if progress is not None:
                    progress(Progress("restore", stats.entries, None, stats.bytes, None, name))
            if out is not None:
                out.close()
                os.replace(tmp_path, target / out_name)
                out = None
        except BaseException:
            if out is not None:
                out.close()
                os.unlink(tmp_path)
            raise
        return stats
