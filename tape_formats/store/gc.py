"""Mark and sweep over a chunk store, compaction of its packs, and what the store saves.

Mark: every recipe of every cartridge in the library's cartridge folder (a cartridge that
was erased, relabelled or deleted has a shorter recipe or none). Sweep: index rows no
recipe names are deleted (one transaction), older chunk files no recipe names are unlinked
with a dead writer's leftover temporary files. Compact: a pack no live row points into is
unlinked; a pack whose live records are under ``COMPACT_BELOW`` of its size is rewritten:
its live records are copied to a new pack, which is fdatasync'd, the rows are moved to it
(one transaction), then the old pack is unlinked. Small packs (under ``SMALL_PACK``, left by
short sessions) are merged the same way when there are two or more: their records copied
into full packs, rows moved, old packs unlinked. A pack a writer still has open (flocked)
is left alone. It all runs with the store's lock held exclusively, so no writer is between
finding a chunk and making its recipe durable (chunk_store.py); recipes on disk are then
the whole truth. The lock is marked while a run goes on, and the index settled first: a run
killed inside an index commit leaves the mark, and the writer that comes next settles the
index before it trusts a lookup (chunk_store.py, ``Hold``). A SIGKILL at any point leaves
either the old pack or the new one named by the index, never neither, and at worst a pack
no row points into, which the next run removes. A reader that looked a chunk up just before its pack went reads its already open
descriptor, or looks it up again (chunk_store.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tape_formats.store import pack as packs
from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_index import Location
from tape_formats.store.chunk_store import ChunkStore

COMPACT_BELOW = 0.5  # a pack with less live data than this fraction of its size is rewritten
# Packs under this size (a short session's: a writer closes its pack when its cartridge
# closes) are merged into full ones when there are two or more.
SMALL_PACK = packs.PACK_SIZE // 4

RECIPE_SUFFIX = ".recipe"


@dataclass(slots=True)
class GcReport:
    chunks_kept: int = 0
    chunks_freed: int = 0
    bytes_freed: int = 0  # disk space returned: packs removed or compacted, chunk files
    temporaries_freed: int = 0
    packs_removed: int = 0  # packs with nothing live, unlinked
    packs_compacted: int = 0  # packs rewritten into a new one without their dead records
    packs_merged: int = 0  # of those, small packs merged with others


@dataclass(slots=True)
class StoreStats:
    cartridges: int = 0
    logical_bytes: int = 0  # payload bytes the cartridges hold, counted per cartridge
    unique_bytes: int = 0  # distinct chunks referenced, uncompressed
    stored_bytes: int = 0  # packs and chunk files on disk (compressed), live or not
    chunks: int = 0  # distinct chunks referenced
    stored_chunks: int = 0  # chunks the store holds (index rows and older chunk files)
    packs: int = 0

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def total_ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0


def _recipes(cartridge_dir: Path, store: ChunkStore) -> list[recipes.Recipe]:
    """The recipes of the cartridges (still there) that keep their data in ``store``."""
    found = []
    for path in sorted(Path(cartridge_dir).glob(f"*{RECIPE_SUFFIX}")):
        if not path.with_name(path.name[: -len(RECIPE_SUFFIX)]).exists():
            continue  # its cartridge is gone
        rec = recipes.load(path)
        if (path.parent / rec.store).resolve() == store.root.resolve():
            found.append(rec)
    return found


def referenced(cartridge_dir: Path, store: ChunkStore) -> dict[bytes, int]:
    """Chunk id -> its length, for every chunk a recipe names."""
    refs: dict[bytes, int] = {}
    for rec in _recipes(cartridge_dir, store):
        refs.update(zip(rec.ch_ids, rec.ch_len, strict=True))
    return refs


def collect(store: ChunkStore, cartridge_dir: Path, *, timeout: float = 30.0) -> GcReport:
    """Free every chunk no cartridge references and compact the packs that then hold
    mostly dead records (StoreBusy if writers hold the store)."""
    report = GcReport()
    with store.exclusive(timeout) as hold:
        refs = referenced(cartridge_dir, store)
        _sweep_index(store, refs, report)
        _sweep_files(store, refs, report)
        _compact(store, report)
        hold.finish()
    return report


def _sweep_index(store: ChunkStore, refs: dict[bytes, int], report: GcReport) -> None:
    dead = []
    for cid, _loc in store.index.rows():
        if cid in refs:
            report.chunks_kept += 1
        else:
            dead.append(cid)
    if dead:
        store.index.remove(dead)
    report.chunks_freed += len(dead)


def _sweep_files(store: ChunkStore, refs: dict[bytes, int], report: GcReport) -> None:
    """Older chunk files (the per-file layout) no recipe names, and temporaries."""
    swept = False
    for cid, path in list(store.chunk_files()):
        if cid is not None and cid in refs:
            report.chunks_kept += 1
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        swept = True
        if cid is None:
            report.temporaries_freed += 1
        else:
            report.chunks_freed += 1
            report.bytes_freed += size
    if swept:
        store.sync_all()


def _live_bytes(store: ChunkStore) -> dict[int, int]:
    live: dict[int, int] = {}
    for _cid, loc in store.index.rows():
        live[loc.pack] = live.get(loc.pack, 0) + packs.record_size(loc.stored)
    return live


def _compact(store: ChunkStore, report: GcReport) -> None:
    live = _live_bytes(store)
    rewrite: list[tuple[int, Path, int]] = []  # (pack, path, fd holding its flock)
    small: list[tuple[int, Path, int]] = []  # mostly live, but small: merged if several
    for number, path in store.pack_files():
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        size = os.fstat(fd).st_size
        if not packs.try_lock(fd):  # a writer has it open
            os.close(fd)
            continue
        if live.get(number, 0) == 0:
            path.unlink()
            os.close(fd)
            report.packs_removed += 1
            report.bytes_freed += size
        elif live[number] < COMPACT_BELOW * size:
            rewrite.append((number, path, fd))
        elif size < SMALL_PACK:
            small.append((number, path, fd))
        else:
            os.close(fd)
    if len(small) > 1:  # merged into one: one file and one descriptor, not many
        rewrite += small
        report.packs_merged = len(small)
    else:
        for _number, _path, fd in small:
            os.close(fd)
    try:
        if rewrite:
            _rewrite(store, rewrite, live, report)
    finally:
        for _number, _path, fd in rewrite:
            os.close(fd)
    if report.packs_removed or report.packs_compacted:
        store.sync_folder()


def _rewrite(store: ChunkStore, old: list[tuple[int, Path, int]], live: dict[int, int],
             report: GcReport) -> None:
    """Copy the live records of ``old`` into new packs, move their rows, unlink ``old``
    (not a pack where fewer live bytes were found than the index names: a damaged record
    cut its walk short, and the rows past it still point there)."""
    moves: list[tuple[bytes, int, Location]] = []
    moved: dict[int, int] = {}
    writer: packs.PackWriter | None = None
    done: list[packs.PackWriter] = []
    try:
        for number, _path, fd in old:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            found = list(packs.records(data))
            here = store.index.lookup([cid for _at, cid, _n in found])
            for at, cid, _size in found:
                loc = here.get(cid)
                if loc is None or (loc.pack, loc.offset) != (number, at):
                    continue  # dead, or a duplicate the index does not point at
                flag, body = packs.decode(data, at, cid)
                if writer is None:
                    writer = packs.PackWriter(store.packs)
                new_at = writer.append(cid, flag, body)
                moves.append((cid, number, Location(writer.number, new_at, loc.stored)))
                moved[number] = moved.get(number, 0) + packs.record_size(loc.stored)
                if writer.full:
                    done.append(writer)
                    writer = None
        if writer is not None:
            done.append(writer)
        for w in done:
            os.fdatasync(w.fd)
        store.sync_folder()
        store.index.move(moves)  # from here the new packs hold the live chunks
        for number, path, fd in old:
            if moved.get(number, 0) != live[number]:
                continue
            report.bytes_freed += os.fstat(fd).st_size
            path.unlink()
            report.packs_compacted += 1
        report.bytes_freed -= sum(w.end for w in done)
    finally:
        for w in done:
            w.close()
        if writer is not None and writer not in done:
            writer.close()


def stats(store: ChunkStore, cartridge_dir: Path) -> StoreStats:
    """Logical, distinct and stored bytes (read-only; no lock: a snapshot of the moment)."""
    out = StoreStats()
    refs: dict[bytes, int] = {}
    for rec in _recipes(cartridge_dir, store):
        out.cartridges += 1
        out.logical_bytes += sum(rec.ext_len)
        refs.update(zip(rec.ch_ids, rec.ch_len, strict=True))
    out.chunks = len(refs)
    out.unique_bytes = sum(refs.values())
    out.stored_chunks = sum(1 for _ in store.index.rows())
    for _number, path in store.pack_files():
        try:
            out.stored_bytes += path.stat().st_size
            out.packs += 1
        except FileNotFoundError:
            continue
    for cid, path in store.chunk_files():
        if cid is None:
            continue
        try:
            out.stored_bytes += os.stat(path).st_size
            out.stored_chunks += 1
        except FileNotFoundError:
            continue
    return out
