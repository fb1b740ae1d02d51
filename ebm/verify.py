"""``ebm verify``: read a backup back and compare tape, trailer and catalog.

Checks, in order (each failure is one line naming the backup and where):
1. every data block reads back (cartridge record checksums; AES-GCM tags when encrypted);
2. the sha256 of the whole pax stream equals the catalog's (and so the trailer's);
3. every file's content sha256 matches the file index (PaxReader verifies while parsing);
4. the trailer on tape decodes and agrees with the catalog: same stream size and sha256,
   same number of index rows, same path/offset/sha256 per row.
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
    def __init__(self, reader: TapeReader) -> None:
        self.reader = reader
        self.h = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.reader.read(n)
        self.h.update(data)
        return data


def verify_backup(catalog: Catalog, library: Library, backup: Backup, secret: bytes | None = None,
                  progress: Callable[[int, int | None], None] | None = None) -> VerifyResult:
    from tape_formats.archive.reader import PaxReader

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
        reader = TapeReader(volumes, opener, backup.size, cipher)
        src = _Hashing(reader)
        expected = {r.header_offset: r.sha256.hex() for r in rows if r.sha256 and r.header_offset >= 0}
        try:
            for _entry, data in PaxReader(src, expected=expected):
                res.entries += 1
                while data.read(1 << 20):
                    pass
                if progress:
                    progress(reader.tell(), backup.size)
            while src.read(1 << 20):
                pass
        except MoverError as e:
            res.problems.append(str(e))
        except Exception as e:  # ArchiveCorrupt and friends: one line
            res.problems.append(f"backup {backup.uuid}: {e}")
        finally:
            reader.close()
        res.bytes = reader.tell()
        if not res.problems and src.h.hexdigest() != backup.sha256:
            res.problems.append(f"backup {backup.uuid}: stream sha256 differs from the catalog")
        res.problems += _check_trailer(catalog, backup, opener, cipher, rows)
    finally:
        with contextlib.suppress(Exception):
            session.close()
    res.ok = not res.problems
    return res


def _check_trailer(catalog: Catalog, backup: Backup, opener: ReadMedia,
                   cipher: BlockCipher | None, rows: list) -> list[str]:
    vols = catalog.volumes(backup.id)
    if not vols:
        return [f"backup {backup.uuid} has no recorded volumes"]
    last = vols[-1]
    try:
        cart = opener.open(last.barcode)
        cart.locate(last.first_object)
        cart.space_filemarks(2)
        where = f"cartridge {last.barcode} file {last.last_file}"
        trailer = parse_trailer(read_trailer_blocks(cart, cipher, where))
    except MoverError as e:
        return [str(e)]
    except Exception as e:
        return [f"backup {backup.uuid}: cannot read the trailer: {e}"]
    if trailer is None or str(trailer.backup_uuid) != backup.uuid:
        return [f"backup {backup.uuid}: no valid trailer on cartridge {last.barcode}"]
    out = []
    if trailer.stream_bytes != backup.size or trailer.stream_sha256 != backup.sha256:
        out.append(f"backup {backup.uuid}: trailer size/sha256 differ from the catalog")
    tape = {(e.path, e.header_offset, e.sha256 or None, e.deleted) for e in trailer.index}
    cat = {(r.path, r.header_offset, r.sha256.hex() if r.sha256 else None, r.deleted) for r in rows}
    if tape != cat:
        out.append(f"backup {backup.uuid}: catalog file index differs from the trailer "
                   f"({len(cat - tape)} rows only in the catalog, {len(tape - cat)} only on tape)")
    return out
