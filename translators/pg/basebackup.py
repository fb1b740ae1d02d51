"""The physical baseline: the server's base backup tar turned into pax members on the fly.

The server streams a tar of its data directory through the replication protocol. From
PostgreSQL 15 on the EBM reads it itself (:mod:`translators.pg.replication`); from older
servers through ``pg_basebackup -D - -Ft -X fetch``, which writes it to our pipe. Either way
:class:`PaxReader` (the archive format's own reader, which reads GNU and ustar tar) walks it
member by member, each member going straight to the EBM's writer as ``data/<path>`` with its
mode, owner and mtime. Nothing is staged on disk. The WAL from the backup's start to its end
comes in ``data/pg_wal`` (``-X fetch``, the protocol's ``WAL``), so the baseline alone is a
consistent cluster; ``backup_label`` and ``backup_manifest`` are members like any other (the
protocol sends the manifest after the tar; it is added as the member pg_basebackup puts
into its tar).

One tar is all a baseline takes, so a cluster with extra tablespaces is refused with a clear
message (pg_basebackup's own, on the older path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import RawIOBase
from typing import IO

from tape_formats.archive import (
    ArchiveCorrupt,
    ArchiveEntry,
    EntryLocation,
    IndexEntry,
    PaxReader,
    PaxWriter,
)
from tape_formats.archive.reader import ByteSource
from translators.base import TranslatorError, file_row

from .replication import BaseBackupStream
from .source import PgSource
from .wal import Segment, describe, is_segment, parse_lsn

DATA_PREFIX = "data/"
PIPE_SIZE = 1 << 20  # Linux's default pipe-max-size
_START = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)")
_TIMELINE = re.compile(r"START TIMELINE: (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


@dataclass(slots=True)
class BaseBackup:
    """What the baseline wrote and what its label and pg_basebackup said."""

    rows: list[IndexEntry] = field(default_factory=list)
    label: str = ""
    start_lsn: int = 0
    stop_lsn: int = 0
    timeline: int = 0
    segments: list[Segment] = field(default_factory=list)
    bytes: int = 0
    owner: tuple[int, int] = (0, 0)  # uid, gid of backup_label: the server's user


def _stderr_reader(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def run() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace").rstrip())

    t = threading.Thread(target=run, name="pg_basebackup-stderr", daemon=True)
    t.start()
    return t


def _wide_pipe(stdout: IO[bytes]) -> RawIOBase:
    """The pipe's unbuffered end, widened to ``PIPE_SIZE``: each read then takes whatever
    pg_basebackup wrote (up to 1 MiB) in one system call, and pg_basebackup runs up to 1 MiB
    ahead of us instead of 64 KiB (the default pipe), so neither side waits on the other for
    every 64 KiB (BufferedReader.read(1 MiB) looped over 16 such reads and copied them)."""
    with contextlib.suppress(OSError, AttributeError):  # a smaller pipe only costs speed
        fcntl.fcntl(stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return stdout.raw  # type: ignore[attr-defined]  # nothing was read through the buffer


def run_basebackup(src: PgSource, writer: PaxWriter, segment_size: int,
                   progress: Callable[[int, str], None] | None = None, *,
                   tool: str | None = None) -> BaseBackup:
    """Stream one base backup into ``writer`` and return its rows and label facts: through
    the replication protocol in this process, or through ``tool`` (pg_basebackup) when
    given (servers before PostgreSQL 15)."""
    if tool is not None:
        return _through_tool(tool, src, writer, segment_size, progress)
    stream = BaseBackupStream(src)
    try:
        out = _convert(stream, writer, segment_size, progress)
        stream.finish()
        if stream.manifest is not None:
            _add_manifest(out, writer, stream.manifest)
    except ArchiveCorrupt as exc:
        raise TranslatorError(f"base backup failed: {exc}") from None
    finally:
        stream.close()
    _read_label(out, stream.stop_lsn)
    return out


def _through_tool(tool: str, src: PgSource, writer: PaxWriter, segment_size: int,
                  progress: Callable[[int, str], None] | None) -> BaseBackup:
    argv = [tool, "-d", src.conninfo, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
            "--label=ebm", "--verbose", "--no-password"]
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    errors: list[str] = []
    err_thread = _stderr_reader(proc, errors)
    try:
        assert proc.stdout is not None
        tar = _wide_pipe(proc.stdout)
        out = _convert(tar, writer, segment_size, progress)
        while tar.read(PIPE_SIZE):  # tar padding after the end marker: let it exit
            pass
    except ArchiveCorrupt as exc:
        proc.kill()
        proc.wait()
        err_thread.join(5)
        raise TranslatorError(f"pg_basebackup failed: {_last(errors) or exc}") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    err_thread.join(5)
    if rc != 0:
        raise TranslatorError(f"pg_basebackup failed: {_last(errors) or f'exit status {rc}'}")
    end = next((m for m in map(_END.search, errors) if m), None)
    _read_label(out, parse_lsn(end.group(1)) if end else 0)
    return out


def _convert(tar: ByteSource, writer: PaxWriter, segment_size: int,
             progress: Callable[[int, str], None] | None) -> BaseBackup:
    """Every member of the tar ``tar`` into ``writer`` as ``data/<path>``."""
    out = BaseBackup()
    for entry, data in PaxReader(tar):
        entry = dataclasses.replace(entry, path=DATA_PREFIX + entry.path)
        if entry.kind != "file":  # directories (empty ones matter: pg_notify) and links
            loc = writer.add(entry)
            out.rows.append(IndexEntry(
                path=entry.path, kind=entry.kind, mtime_ns=entry.mtime_ns, mode=entry.mode,
                uid=entry.uid, gid=entry.gid, header_offset=loc.header_offset,
                data_offset=loc.data_offset, linkname=entry.linkname))
            continue
        name = entry.path[len(DATA_PREFIX):]
        if name == "backup_label":
            body = data.read()
            out.label = body.decode("utf-8", "replace")
            out.owner = (entry.uid, entry.gid)
            loc = writer.add(entry, body)
        else:
            loc = writer.add(entry, data)
        _add_row(out, entry, loc, segment_size)
        if progress is not None:
            progress(out.bytes, entry.path)
    return out


def _add_row(out: BaseBackup, entry: ArchiveEntry, loc: EntryLocation, segment_size: int) -> None:
    row = file_row(entry, loc)
    out.rows.append(row)
    out.bytes += entry.size
    name = entry.path[len(DATA_PREFIX):]
    if name.startswith("pg_wal/") and is_segment(name[7:]):
        seg = describe(name[7:], segment_size)
        seg.sha256 = row.sha256 or ""
        out.segments.append(seg)


def _add_manifest(out: BaseBackup, writer: PaxWriter, manifest: IO[bytes]) -> None:
    """The manifest as the member pg_basebackup puts into its tar (mode 0600), owned as the
    backup_label is (the server's user)."""
    size = manifest.seek(0, os.SEEK_END)
    manifest.seek(0)
    uid, gid = out.owner
    entry = ArchiveEntry(path=DATA_PREFIX + "backup_manifest", kind="file", size=size,
                         mode=0o600, uid=uid, gid=gid, mtime_ns=time.time_ns())
    _add_row(out, entry, writer.add(entry, manifest), 0)


def _last(lines: list[str]) -> str:
    """pg_basebackup's own error line, without its program-name prefix."""
    for line in reversed(lines):
        if "error:" in line or "FATAL" in line:
            return line.split("error:", 1)[-1].strip()
    return lines[-1].removeprefix("pg_basebackup: ").strip() if lines else ""


def _read_label(out: BaseBackup, stop_lsn: int) -> None:
    start = _START.search(out.label)
    tli = _TIMELINE.search(out.label)
    if start is None or tli is None or not stop_lsn:
        raise TranslatorError("the base backup gave no backup_label or WAL end point")
    out.start_lsn = parse_lsn(start.group(1))
    out.timeline = int(tli.group(1))
    out.stop_lsn = stop_lsn
    if not out.segments:
        raise TranslatorError("the base backup sent no WAL: it is not consistent")
