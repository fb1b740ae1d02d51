"""``ebm verify``: read a backup back and compare tape, trailer and catalog.

Checks (each failure is one line naming the backup and where):
1. the trailer on tape decodes (read first: its version says which stream digest to compute);
2. every data block reads back (cartridge record checksums; AES-GCM tags when encrypted);
3. every file's content sha256 matches the file index (PaxReader verifies while parsing);
4. the stream digest equals the catalog's (and so the trailer's): for a version 2 trailer the
   member digest, recomputed from the same per-file sha256 as check 3 (one hash pass over the
   data, ``tape_formats/archive/stream_digest.py``); for a version 1 trailer the sha256 of the
   whole stream; with no readable trailer, either;
5. the trailer agrees with the catalog: same stream size and digest, same number of index
   rows, same path/offset/sha256 per row.
Bareos's lesson: catalog and tape drift apart silently unless something compares them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ebm.backup_labels import parse_trailer
from ebm.catalog import Backup, Catalog
from ebm.crypto import BlockCipher
from ebm.drive_session import DriveSession, ReadMedia
from ebm.mover import MoverError, TapeReader, read_trailer_blocks
from ebm.restore import RestoreError, cipher_for
from tape_formats.archive.labels import BackupTrailerInfo
from tape_formats.archive.reader import PaxReader
from tape_formats.archive.stream_digest import MEMBERS, PLAIN

if TYPE_CHECKING:  # vtl is imported only when a command needs the library
    from vtl.library import Library


@dataclass
class VerifyResult:
    backup: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    bytes: int = 0
    entries: int = 0


class _Hashing:
    """The plain sha256 of every byte read: what a version 1 trailer holds."""

    def __init__(self, reader: TapeReader) -> None:
        self.reader = reader
        self.h = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.reader.read(n)
        self.h.update(data)
        return data


def verify_backup(catalog: Catalog, library: Library, backup: Backup, secret: bytes | None = None,
                  progress: Callable[[int, int | None], None] | None = None) -> VerifyResult:
    res = VerifyResult(backup.uuid)
    if backup.state != "done":
        res.ok = False
        res.problems.append(f"backup {backup.uuid} is {backup.state}")
        return res
    try:
        cipher = cipher_for(backup, secret)
    except RestoreError as e:
        res.ok, res.problems = False, [str(e)]
        return res
    rows = catalog.files(backup.id)
    volumes = catalog.volumes(backup.id)
    session = DriveSession(library, f"ebm-verify:{backup.uuid}")
    opener = ReadMedia(session)
    try:
        trailer, trailer_problems = _read_trailer(backup, volumes, opener, cipher)
        kind = trailer.stream_digest_kind if trailer is not None else None
        reader = TapeReader(volumes, opener, backup.size, cipher)
        plain = _Hashing(reader) if kind != MEMBERS else None
        expected = {r.header_offset: r.sha256.hex() for r in rows if r.sha256 and r.header_offset >= 0}
        pax = PaxReader(plain or reader, expected=expected, stream_digest=kind != PLAIN)
        try:
            for _entry, data in pax:
                res.entries += 1
                while data.read_view(1 << 20):
                    pass
                if progress:
                    progress(reader.tell(), backup.size)
            if plain is not None:
                while plain.read(1 << 20):
                    pass
        except MoverError as e:
            res.problems.append(str(e))
        except Exception as e:  # ArchiveCorrupt and friends: one line
            res.problems.append(f"backup {backup.uuid}: {e}")
        finally:
            reader.close()
        res.bytes = reader.tell()
        if not res.problems:
            res.problems += _stream_problems(backup, kind, pax, plain)
        res.problems += trailer_problems
        if trailer is not None:
            res.problems += _compare_trailer(backup, trailer, rows)
    finally:
        with contextlib.suppress(Exception):
            session.close()
    res.ok = not res.problems
    return res


def _stream_problems(backup: Backup, kind: str | None, pax: PaxReader,
                     plain: _Hashing | None) -> list[str]:
    """Check 4: the digest of the kind the trailer names (either kind without a trailer)."""
    if kind != PLAIN and pax.offset != backup.size:  # the member digest ends at the marker
        return [f"backup {backup.uuid}: {backup.size - pax.offset} bytes after the "
                "end-of-archive marker"]
    found = set()
    if plain is not None:
        found.add(plain.h.hexdigest())
    if pax.digest is not None:
        found.add(pax.digest.hexdigest())
    if backup.sha256 not in found:
        return [f"backup {backup.uuid}: stream digest differs from the catalog"]
    return []


def _read_trailer(backup: Backup, vols: list, opener: ReadMedia, cipher: BlockCipher | None
                  ) -> tuple[BackupTrailerInfo | None, list[str]]:
    """Check 1: the trailer from the last cartridge, or None and the problem."""
    if not vols:
        return None, [f"backup {backup.uuid} has no recorded volumes"]
    last = vols[-1]
    try:
        cart = opener.open(last.barcode)
        cart.locate(last.first_object)
        cart.space_filemarks(2)
        where = f"cartridge {last.barcode} file {last.last_file}"
        trailer = parse_trailer(read_trailer_blocks(cart, cipher, where))
    except MoverError as e:
        return None, [str(e)]
    except Exception as e:
        return None, [f"backup {backup.uuid}: cannot read the trailer: {e}"]
    if trailer is None or str(trailer.backup_uuid) != backup.uuid:
        return None, [f"backup {backup.uuid}: no valid trailer on cartridge {last.barcode}"]
    return trailer, []


def _compare_trailer(backup: Backup, trailer: BackupTrailerInfo, rows: list) -> list[str]:
    """Check 5: the trailer and the catalog say the same."""
    out = []
    if trailer.stream_bytes != backup.size or trailer.stream_digest != backup.sha256:
        out.append(f"backup {backup.uuid}: trailer size/digest differ from the catalog")
    tape = {(e.path, e.header_offset, e.sha256 or None, e.deleted) for e in trailer.index}
    cat = {(r.path, r.header_offset, r.sha256.hex() if r.sha256 else None, r.deleted) for r in rows}
    if tape != cat:
        out.append(f"backup {backup.uuid}: catalog file index differs from the trailer "
                   f"({len(cat - tape)} rows only in the catalog, {len(tape - cat)} only on tape)")
    return out
