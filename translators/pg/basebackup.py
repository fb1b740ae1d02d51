"""The physical baseline: ``pg_basebackup -D - -Ft -X fetch`` turned into pax members on the fly.

The server streams a tar of its data directory through the replication protocol; pg_basebackup
writes it to our pipe and :class:`PaxReader` (the archive format's own reader, which reads GNU
and ustar tar) walks it member by member, each member going straight to the EBM's writer as
``data/<path>`` with its mode, owner and mtime. Nothing is staged on disk. ``-X fetch`` puts the
WAL from the backup's start to its end into ``data/pg_wal``, so the baseline alone is a
consistent cluster; ``backup_label`` and ``backup_manifest`` are members like any other.

One tar on stdout is all pg_basebackup can write, so a cluster with extra tablespaces is
refused by it with a clear message, which we pass on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import RawIOBase
from typing import IO

from tape_formats.archive import ArchiveCorrupt, IndexEntry, PaxReader, PaxWriter
from translators.base import TranslatorError, file_row

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


def run_basebackup(tool: str, src: PgSource, writer: PaxWriter, segment_size: int,
                   progress: Callable[[int, str], None] | None = None) -> BaseBackup:
    """Stream one base backup into ``writer`` and return its rows and label facts."""
    argv = [tool, "-d", src.conninfo, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
            "--label=ebm", "--verbose", "--no-password"]
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    errors: list[str] = []
    err_thread = _stderr_reader(proc, errors)
    out = BaseBackup()
    try:
        assert proc.stdout is not None
        tar = _wide_pipe(proc.stdout)
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
                loc = writer.add(entry, body)
            else:
                loc = writer.add(entry, data)
            row = file_row(entry, loc)
            out.rows.append(row)
            out.bytes += entry.size
            if name.startswith("pg_wal/") and is_segment(name[7:]):
                seg = describe(name[7:], segment_size)
                seg.sha256 = row.sha256 or ""
                out.segments.append(seg)
            if progress is not None:
                progress(out.bytes, entry.path)
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
    _read_label(out, errors)
    return out


def _last(lines: list[str]) -> str:
    """pg_basebackup's own error line, without its program-name prefix."""
    for line in reversed(lines):
        if "error:" in line or "FATAL" in line:
            return line.split("error:", 1)[-1].strip()
    return lines[-1].removeprefix("pg_basebackup: ").strip() if lines else ""


def _read_label(out: BaseBackup, stderr: list[str]) -> None:
    start = _START.search(out.label)
    tli = _TIMELINE.search(out.label)
    end = next((m for m in map(_END.search, stderr) if m), None)
    if start is None or tli is None or end is None:
        raise TranslatorError("pg_basebackup gave no backup_label or WAL end point")
    out.start_lsn = parse_lsn(start.group(1))
    out.timeline = int(tli.group(1))
    out.stop_lsn = parse_lsn(end.group(1))
    if not out.segments:
        raise TranslatorError("pg_basebackup sent no WAL (-X fetch): the backup is not consistent")
