"""WAL segments: names and LSNs, the header check, commit times, and the spool.

A segment's name is ``TTTTTTTTXXXXXXXXYYYYYYYY``: timeline, then the segment number split in
"log" and "seg" parts (``segno = X * (4 GiB / segment_size) + Y``). It holds LSNs
``[segno * size, (segno + 1) * size)``. Its first page starts with the long page header
(``XLogLongPageHeaderData``: magic, info, timeline, page address, remaining length, system
identifier, segment size, block size), which :func:`check_segment` compares with what the
name and the cluster say, so a segment of another cluster or a truncated copy never gets on
tape as if it were good.

Commit times (first and last of each segment) are read from the segments' records by
:mod:`translators.pg.wal_records`; they are what ``recovery_target_time`` compares against,
so the catalogue can say which segments a point in time needs.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from translators.base import TranslatorError

from .wal_records import BadWal, WalView, segment_commits

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002


def parse_lsn(text: str) -> int:
    hi, sep, lo = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise TranslatorError(f"bad LSN {text!r} (use the X/Y form, e.g. 0/3000060)") from None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, segno: int, size: int) -> str:
    per = 0x1_0000_0000 // size
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def split_name(name: str, size: int) -> tuple[int, int]:
    """(timeline, segno) of a segment file name."""
    per = 0x1_0000_0000 // size
    return int(name[:8], 16), int(name[8:16], 16) * per + int(name[16:], 16)


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY.match(name))


@dataclass(slots=True)
class Segment:
    """One catalogued segment: what a restore needs to pick it and check it."""

    name: str
    start_lsn: str
    end_lsn: str
    sha256: str = ""
    size: int = 0
    first_commit: float | None = None
    last_commit: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def describe(name: str, size: int) -> Segment:
    _tli, segno = split_name(name, size)
    return Segment(name=name, start_lsn=format_lsn(segno * size),
                   end_lsn=format_lsn((segno + 1) * size), size=size)


def check_segment(path: Path, system_identifier: str, size: int) -> None:
    """Refuse a segment whose long page header disagrees with its name or the cluster."""
    name = path.name
    try:
        st = path.stat()
        with open(path, "rb") as f:
            head = f.read(_LONG_HEADER.size)
    except OSError as exc:
        raise TranslatorError(f"cannot read WAL segment {path}: {exc.strerror}") from None
    if st.st_size != size or len(head) < _LONG_HEADER.size:
        raise TranslatorError(f"WAL segment {name} is {st.st_size} bytes, not {size}: "
                              "truncated or not a segment")
    _magic, info, _tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack(head)
    _t, segno = split_name(name, size)
    if not info & _XLP_LONG_HEADER or pageaddr != segno * size or seg_size != size:
        raise TranslatorError(f"WAL segment {name} has a bad header (page address "
                              f"{format_lsn(pageaddr)}, expected {format_lsn(segno * size)})")
    if str(sysid) != system_identifier:
        raise TranslatorError(f"WAL segment {name} belongs to another cluster (system "
                              f"identifier {sysid}, expected {system_identifier})")


def commit_times(spool: Path, segments: list[Segment], size: int) -> bool:
    """Fill first/last commit time of each segment (contiguous, in order) from the segments'
    own records (:mod:`translators.pg.wal_records`).

    Returns whether every commit was read: a segment without times then surely has no
    commits, which is what lets a restore drop a time target no commit goes past."""
    if not segments:
        return True
    first = split_name(segments[0].name, size)[1]
    with open(spool / segments[0].name, "rb") as f:
        page_size = _LONG_HEADER.unpack(f.read(_LONG_HEADER.size))[-1]  # xlp_xlog_blcksz
    wal = WalView([spool / s.name for s in segments], first, size, page_size)
    complete = True
    try:
        for k, seg in enumerate(segments):
            try:
                seg.first_commit, seg.last_commit = segment_commits(wal, first + k)
            except BadWal:
                complete = False
    finally:
        wal.close()
    return complete


class Spool:
    """The directory archive_command fills; the EBM reads it and prunes what is on tape.

    Pruning is one backup late on purpose: a backup's segments are deleted by the *next*
    backup, which knows from the catalog that the previous one is durable on tape."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size

    def segments(self, timeline: int) -> dict[int, str]:
        """segno -> file name of the complete segments of ``timeline`` in the spool."""
        out = {}
        for name in os.listdir(self.path):
            if is_segment(name):
                tli, segno = split_name(name, self.size)
                if tli == timeline:
                    out[segno] = name
        return out

    def histories(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if is_history(n))

    def collect(self, timeline: int, after: int, upto: int) -> list[str]:
        """The names of segments ``after+1 .. upto``, or an error naming the first gap."""
        have = self.segments(timeline)
        names = []
        for segno in range(after + 1, upto + 1):
            name = have.get(segno)
            if name is None:
                raise TranslatorError(
                    f"WAL gap: segment {segment_name(timeline, segno, self.size)} is missing "
                    f"from {self.path} (the chain ends at "
                    f"{segment_name(timeline, after, self.size)}); take a new baseline with --full")
            names.append(name)
        return names

    def prune(self, timeline: int, upto: int) -> int:
        """Delete segments (and their .backup files) up to ``upto``: they are on tape. A
        ``.part`` file is an archive_command at work, and is left to it."""
        removed = 0
        for name in os.listdir(self.path):
            head = name[:24]
            if not is_segment(head) or name.endswith(".part"):
                continue
            tli, segno = split_name(head, self.size)
            if tli <= timeline and segno <= upto:
                try:
                    os.unlink(self.path / name)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed
