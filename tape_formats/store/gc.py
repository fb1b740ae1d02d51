"""Mark and sweep over a chunk store, and what the store saves.

Mark: every recipe of every cartridge in the library's cartridge folder (a cartridge that
was erased, relabelled or deleted has a shorter recipe or none). Sweep: chunk files no
recipe names are unlinked, and a writer's leftover temporary files with them. It runs with
the store's lock held exclusively, so no writer is between finding a chunk and making its
recipe durable (chunk_store.py); recipes on disk are then the whole truth, and a SIGKILL at
any point of a sweep only leaves chunks that the next sweep frees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_store import ChunkStore

RECIPE_SUFFIX = ".recipe"


@dataclass(slots=True)
class GcReport:
    chunks_kept: int = 0
    chunks_freed: int = 0
    bytes_freed: int = 0
    temporaries_freed: int = 0


@dataclass(slots=True)
class StoreStats:
    cartridges: int = 0
    logical_bytes: int = 0  # payload bytes the cartridges hold, counted per cartridge
    unique_bytes: int = 0  # distinct chunks referenced, uncompressed
    stored_bytes: int = 0  # chunk files on disk (compressed), referenced or not
    chunks: int = 0  # distinct chunks referenced
    chunk_files: int = 0

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
    """Free every chunk no cartridge references (StoreBusy if writers hold the store)."""
    report = GcReport()
    with store.exclusive(timeout):
        refs = referenced(cartridge_dir, store)
        for cid, path in list(store.chunk_files()):
            if cid is not None and cid in refs:
                report.chunks_kept += 1
                continue
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            if cid is None:
                report.temporaries_freed += 1
            else:
                report.chunks_freed += 1
                report.bytes_freed += size
        store.sync()
    return report


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
    for cid, path in store.chunk_files():
        if cid is None:
            continue
        try:
            out.stored_bytes += os.stat(path).st_size
            out.chunk_files += 1
        except FileNotFoundError:
            continue
    return out
