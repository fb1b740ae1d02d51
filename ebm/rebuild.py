"""``ebm catalog rebuild``: the backup catalog from the cartridges alone (like Bareos bscan).

Every cartridge of the library is read from BOP: a tape file whose first block is an EBM
backup header starts a backup segment; the next tape file is (part of) its data; then either
a trailer tape file (the backup ended on this cartridge) or EOD/another header (it continued on
another cartridge). Segments are joined by backup uuid and volume sequence. A backup is
accepted only if its trailer was found and every volume from 0 to the trailer's is present,
so a crashed job's torn tail (header and data, no trailer) is never taken for a backup.

Encrypted trailers need the key: without it such a backup is recorded with its identity and
extents but no file index, and a note saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ebm.backup_labels import parse_header, parse_trailer
from ebm.catalog import BLOCK_SIZE, Catalog, CatalogError, FileRow, Volume
from ebm.crypto import BlockCipher, CryptoError
from ebm.drive_session import DriveSession
from ebm.manager import _row, state_from_b64
from ebm.mover import MoverError, read_trailer_blocks
from tape_formats.archive.labels import BackupTrailerInfo
from tape_formats.cartridge import RecordKind, TapeCartridge
from vtl.barcode import is_cleaning_label

if TYPE_CHECKING:  # vtl is imported only when a command needs the library
    from vtl.library import Library


@dataclass
class Segment:
    barcode: str
    header: dict[str, Any]
    first_object: int
    first_file: int
    data_object: int
    blocks: int
    end_object: int
    end_file: int
    trailer: BackupTrailerInfo | None = None
    trailer_error: str | None = None


@dataclass
class RebuildResult:
    backups: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # uuid: reason
    cartridges: int = 0


def scan_cartridge(cart: TapeCartridge, barcode: str, secret: bytes | None) -> list[Segment]:
    segs: list[Segment] = []
    buf = bytearray(BLOCK_SIZE + 4096)
    cart.rewind()
    while cart.position < cart.eod:
        start = cart.position
        file_no = cart.filemarks_before(start)
        res = cart.read_block(memoryview(buf))
        hdr = parse_header(res.data) if res.kind == RecordKind.DATA else None
        if hdr is None:
            cart.locate(start)
            if cart.space_filemarks(1).stopped is not None:
                break
            continue
        cart.space_filemarks(1)  # rest of the header tape file
        data_obj = cart.position
        sp = cart.space_filemarks(1)
        if sp.stopped is not None:  # data ran to EOD: continued elsewhere (or torn)
            blocks = cart.eod - data_obj
        else:
            blocks = cart.position - 1 - data_obj
        seg = Segment(barcode, hdr, start, file_no, data_obj, blocks, cart.position,
                      cart.filemarks_before(max(start, cart.position - 1)) + 1)
        if cart.position < cart.eod:
            tstart = cart.position
            probe = cart.read_block(memoryview(buf))
            cart.locate(tstart)
            if probe.kind == RecordKind.DATA and parse_header(probe.data) is None:
                cipher = None
                if hdr["crypto"]:
                    if secret is not None:
                        try:
                            cipher = BlockCipher.open(secret, hdr["uuid"], hdr["crypto"])
                        except CryptoError as e:
                            seg.trailer_error = str(e)
                    else:
                        seg.trailer_error = "encrypted trailer, no key given"
                if seg.trailer_error is None:
                    try:
                        raw = read_trailer_blocks(cart, cipher, f"cartridge {barcode}")
                        seg.trailer = parse_trailer(raw)
                    except MoverError as e:
                        seg.trailer_error = str(e)
                else:
                    cart.space_filemarks(1)
                    seg.trailer = "opaque"
                seg.end_object = cart.position
                seg.end_file = cart.filemarks_before(max(start, cart.position - 1)) + 1
        segs.append(seg)
    return segs


def rebuild(catalog: Catalog, library: Library, secret: bytes | None = None,
            barcodes: list[str] | None = None,
            progress: Callable[[int, int | None], None] | None = None) -> RebuildResult:
    res = RebuildResult()
    if barcodes is None:
        library.refresh()
        # a cleaning cartridge holds no backup, and loading it would use up a cleaning
        barcodes = [el.barcode for el in library.elements()
                    if el.barcode and not is_cleaning_label(el.barcode)]
        barcodes = sorted(set(barcodes))
    segs: list[Segment] = []
    session = DriveSession(library, "ebm-rebuild")
    try:
        for i, bc in enumerate(barcodes):
            try:
                cart = session.mount(bc)
            except MoverError as e:
                res.skipped.append(f"{bc}: {e}")
                continue
            segs += scan_cartridge(cart, bc, secret)
            session.unload()
            res.cartridges += 1
            if progress:
                progress(i + 1, len(barcodes))
    finally:
        with contextlib.suppress(Exception):
            session.close()
    by_uuid: dict[str, list[Segment]] = {}
    for s in segs:
        by_uuid.setdefault(s.header["uuid"], []).append(s)
    existing = {b.uuid for b in catalog.backups()}
    ordered = sorted(by_uuid.items(), key=lambda kv: kv[1][0].header["created"])
    ends: dict[str, tuple[int, bool]] = {}
    for u, parts in ordered:
        parts.sort(key=lambda s: s.header["seq"])
        last = parts[-1]
        if [s.header["seq"] for s in parts] != list(range(len(parts))):
            res.skipped.append(f"{u}: volumes missing")
            continue
        if last.trailer is None:
            res.skipped.append(f"{u}: no trailer (torn or failed backup)")
            continue
        for s in parts:
            end, full = ends.get(s.barcode, (0, False))
            ends[s.barcode] = (max(end, s.end_object), full or s is not last)
        if u in existing:
            old = catalog.backup(u)
            if not (old.options.get("index_missing") and last.trailer != "opaque"):
                continue
            # the key is here now: replace the index-less row, keeping children linked
            with catalog.tx():
                catalog.db.execute("DELETE FROM ebm_backup_volumes WHERE backup=?", (old.id,))
                catalog.db.execute("DELETE FROM ebm_backups WHERE id=?", (old.id,))
            new_id = _record(catalog, parts, res)
            catalog.db.execute("UPDATE ebm_backups SET parent=? WHERE parent=?", (new_id, old.id))
            continue
        _record(catalog, parts, res)
    for bc, (end, full) in ends.items():
        hdr_pool = next((s.header["options"].get("pool") for s in segs if s.barcode == bc), None)
        if catalog.media(bc) is None and hdr_pool:
            with contextlib.suppress(CatalogError):  # a pool name the library cannot take
                if hdr_pool not in catalog.pools():
                    catalog.create_pool(hdr_pool)
                catalog.add_to_pool(hdr_pool, bc)
        if catalog.media(bc) is not None:
            catalog.release_media(bc, append_at=end, state="full" if full else "append")
    return res


def _record(catalog: Catalog, parts: list[Segment], res: RebuildResult) -> int:
    h = parts[0].header
    last = parts[-1]
    opts = h["options"]
    ds = h["dataset"]
    if catalog.dataset(ds) is None:
        catalog.add_dataset(ds, h["translator"], opts.get("source", ""), opts.get("pool"))
        if opts.get("drive_encryption"):  # later backups of it need the drive's key too
            catalog.set_dataset_options(ds, {"drive_encryption": True})
    parent_id = None
    if h["parent"]:
        with contextlib.suppress(Exception):
            parent_id = catalog.backup(h["parent"]).id
    level = opts.get("level_name") or ("incr" if h["depth"] else "full")
    if last.trailer not in (None, "opaque"):
        level = last.trailer.extra.get("level_name", level)  # what was really written
    if level == "full":
        parent_id = None
    options = {"compress": opts.get("compress", True), "block_size": h["block_size"],
               "rebuilt": True}
    if h["crypto"]:
        options["crypto"] = h["crypto"]
    if opts.get("drive_encryption"):
        options["drive_encryption"] = opts["drive_encryption"]
    trailer = last.trailer
    files: list[FileRow] = []
    size = nfiles = 0
    sha = None
    state = None
    if trailer == "opaque":
        options["note"] = "encrypted trailer: file index not rebuilt (rerun with the key)"
        options["index_missing"] = True
    else:
        files = [_row(e) for e in trailer.index]
        size, sha, nfiles = trailer.stream_bytes, trailer.stream_digest, len(trailer.index)
        state = state_from_b64(trailer.extra.get("state"))
    with catalog.tx():
        cur = catalog.db.execute(
            """INSERT INTO ebm_backups(uuid, dataset, level, parent, translator, started, state,
               pid, options) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)""",
            (h["uuid"], ds, level, parent_id, h["translator"], h["created"], os.getpid(),
             json.dumps(options)))
        bid = int(cur.lastrowid or 0)
    vols, first_block = [], 0
    for s in parts:
        vols.append(Volume(bid, s.header["seq"], s.barcode, s.first_file,
                           max(s.first_file, s.end_file - 1), s.first_object, s.end_object,
                           s.data_object if s.blocks else None, first_block,
                           first_block + s.blocks - 1))
        first_block += s.blocks
    if not size:
        size = first_block * h["block_size"]  # unknown exactly without the trailer
    catalog.finish_backup(bid, size=size, nfiles=nfiles, blocks=first_block, sha256=sha or "",
                          volumes=vols, files=files, state=state, media_updates=[])
    catalog.db.execute("UPDATE ebm_backups SET finished=? WHERE id=?", (time.time(), bid))
    res.backups.append(h["uuid"])
    return bid
