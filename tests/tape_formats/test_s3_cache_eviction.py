"""The S3 cache's eviction rules, without a bucket (tape_formats/store/s3_cache.py): only
packs the bucket holds whole go, least recently used first, never a pack a writer holds
or one not uploaded yet; the index forgets their chunks, and the rest still read."""

from __future__ import annotations

import os
import random
from pathlib import Path

import zstandard

from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.pack import RAW
from tape_formats.store.s3_cache import CacheState, cache_report, evict_to


def _session(root: Path, seed: int, n: int = 8) -> tuple[ChunkStore, list[bytes]]:
    """A writer that stored ``n`` new 64 KiB chunks in a pack of its own (synced, open)."""
    store = ChunkStore.create(root)
    rng = random.Random(seed)
    data = [rng.randbytes(64 << 10) for _ in range(n)]
    ids = [os.urandom(32) for _ in data]
    store.append_many([(cid, RAW, body) for cid, body in zip(ids, data, strict=True)])
    store.sync()
    return store, ids


def test_eviction_takes_uploaded_idle_packs_least_recently_used_first(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sessions = []
    for seed in range(4):
        store, ids = _session(root, seed)
        store.close()  # the writer lets go of its pack
        sessions.append(ids)
    held, held_ids = _session(root, 9)  # a mounted cartridge's writer: its pack stays flocked
    store, state = ChunkStore(root), CacheState(root)
    packs = {n: p for n, p in store.pack_files()}
    by_chunk = {cid: loc.pack for cid, loc in store.index.rows()}
    first = [by_chunk[ids[0]] for ids in sessions]
    for n in [*first[:3], by_chunk[held_ids[0]]]:  # in the bucket whole: all but session 3
        state.record([], n, packs[n].stat().st_size)
    for age, n in enumerate(first):  # session 0 used most recently, then 1, 2, 3
        os.utime(packs[n], (1_000_000 - age * 1000, 1_000))
    pack_size = packs[first[0]].stat().st_size
    before = cache_report(store, state)
    assert before.pending_bytes == pack_size  # session 3's pack only

    report = evict_to(store, state, before.local_bytes - pack_size)  # room for one pack less
    assert report.packs_evicted == 1 and not packs[first[2]].exists()  # the oldest uploaded
    report = evict_to(store, state, 0)
    assert report.packs_evicted == 2
    assert not packs[first[0]].exists() and not packs[first[1]].exists()
    assert packs[first[3]].exists()  # not in the bucket yet
    assert packs[by_chunk[held_ids[0]]].exists()  # a writer holds it
    dctx = zstandard.ZstdDecompressor()
    assert not store.has(sessions[0][0]) and store.has(sessions[3][0])
    try:
        store.get(sessions[0][0], 64 << 10, dctx)  # no bucket attached: an I/O error
        raise AssertionError("an evicted chunk read without a bucket")
    except StoreError:
        pass
    assert len(store.get(held_ids[0], 64 << 10, dctx)) == 64 << 10
    held.close()
    assert evict_to(store, state, 0).packs_evicted == 1  # its writer is done: it may go
    state.close()
    store.close()
