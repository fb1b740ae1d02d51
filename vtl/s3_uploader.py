"""The uploader of a library with ``[s3] upload = "auto"``: a background stage that moves new
chunks to the bucket and keeps the local store within ``[s3] cache_size``.

One per library per process (``vtl serve``, the EBM's in-process library, a CLI command
that writes), on a thread of its own. It runs a *pass* when a chunk store of this process
made new chunks durable (a sync point: a filemark without IMMED, an unload; chunk_store.py
calls the remote's ``synced``), when the library opens with uploads left pending (a crash
or a kill between a sync point and its upload: the next start finishes them), and at
``Library.close``, which waits for it and every pass asked for before (``drain``), so a
command that wrote returns with its chunks in the bucket and its packs trimmed.

A pass (tape_formats/store/s3_cache.py): under a writer marker (vtl/bucket_gc.py: no bucket
collection runs meanwhile) every pack's records past its upload progress that the bucket
does not hold yet are put into pack objects of several MiB, each with its manifest
(tape_formats/store/s3_packs.py); then this library's reference list is rewritten (the chunks its
recipes name, so a bucket collection keeps those evicted from the cache; written in every
pass that uploads or evicts, before it evicts); then, with a cache size, the least
recently used packs the bucket holds whole are evicted. A sync point
that finds more bytes not yet in the bucket than the cache size waits for the pass
(``synced``): the local store stays near its bound, the drive slowed to the bucket's pace. An error
(the bucket unreachable) is logged and leaves the uploads pending: the data is durable
locally meanwhile, and a pass runs again ``RETRY_SECONDS`` later (in a process that lives
on, as ``vtl serve``) or at the next start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from vtl.s3_settings import S3Settings

log = logging.getLogger("vtl.s3")
RETRY_SECONDS = 30  # after a failed pass (the bucket unreachable), the next one

_UPLOADERS: dict[Path, Uploader] = {}
_REGISTRY = threading.Lock()


class Uploader:
    """The background stage of one library (module docstring). ``kick`` asks for a pass;
    ``drain`` waits until every pass asked for before it has run."""

    def __init__(self, library_root: Path, store_root: Path, settings: S3Settings) -> None:
        self.library_root, self.store_root, self.settings = library_root, store_root, settings
        # Where the bucket is, as this process's environment says when the library opens:
        # the thread's passes (and retries) reach the same store whatever changes later.
        self._target = (settings.target(),
                        settings.endpoint or os.environ.get("VTL_S3_ENDPOINT", ""))
        self._cond = threading.Condition()
        self._asked = self._done = 0
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self.last_error: Exception | None = None

    def kick(self) -> None:
        with self._cond:
            self._asked += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="s3-uploader",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def synced(self) -> None:
        """A sync point made new chunks durable: ask for a pass; with a cache size, wait for
        it while the packs not in the bucket yet exceed the cache (the drive then writes at
        the bucket's pace, as a gateway whose upload buffer is full)."""
        self.kick()
        if self.settings.cache_size and _pending(self.store_root) > self.settings.cache_size:
            self.drain()

    def drain(self) -> None:
        with self._cond:
            want = self._asked
            while self._done < want:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._done >= self._asked:
                    self._cond.wait()
                target = self._asked
            try:
                self.run_pass()
                self.last_error = None
            except Exception as exc:  # the data is durable locally; a later pass retries
                self.last_error = exc
                log.warning("upload to %s failed: %s (retrying in %d s)",
                            self.settings.location, exc, RETRY_SECONDS)
                if self.library_root.exists():  # (not a library deleted under us)
                    retry = threading.Timer(RETRY_SECONDS, self.kick)
                    retry.daemon = True  # a command that exits leaves it to the next start
                    retry.start()
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def run_pass(self) -> tuple[Any, Any]:
        """Upload what is pending, refresh the reference list, evict down to the cache
        size; returns (UploadReport, CacheReport)."""
        from tape_formats.store.chunk_store import ChunkStore
        from tape_formats.store.gc import referenced
        from tape_formats.store.s3_cache import (
            CacheState,
            UploadReport,
            cache_report,
            evict_to,
            upload_pending,
        )
        from vtl.bucket_gc import library_name, put_references, uploading
        from vtl.library import CARTRIDGE_DIR

        (bucket, prefix), endpoint = self._target
        store, state = ChunkStore(self.store_root), CacheState(self.store_root)
        try:
            up = UploadReport()
            cache = cache_report(store, state)
            limit = self.settings.cache_size
            evicting = bool(limit) and cache.local_bytes > limit
            if cache.pending_bytes or evicting:
                # The reference list goes up after the uploads and before any eviction, so
                # a bucket collection keeps what the recipes name once it is only there.
                if self._client is None:
                    self._client = self.settings.client(endpoint or None)
                who = library_name(self.settings.gateway, self.library_root)
                with uploading(self._client, bucket, prefix, who):
                    # (also when only evicting: a collection since the last pass may have
                    # taken chunks of local packs, which this pass then sends again)
                    up = upload_pending(store, state, self._client, bucket, prefix,
                                        part_size=self.settings.part_size)
                    put_references(self._client, bucket, prefix, who,
                                   referenced(self.library_root / CARTRIDGE_DIR, store))
            if evicting:
                cache = evict_to(store, state, limit)
            return up, cache
        finally:
            state.close()
            store.close()


def uploader_for(library_root: Path, store_root: Path, settings: S3Settings) -> Uploader:
    """This process's uploader of the library (made once), asked for a pass when the store
    holds packs not uploaded yet: a crash's leftovers, another process's reads."""
    key = Path(library_root).resolve()
    with _REGISTRY:
        up = _UPLOADERS.get(key)
        if up is None or up.settings != settings:
            up = _UPLOADERS[key] = Uploader(key, Path(store_root), settings)
    if _pending(Path(store_root)) > 0:
        up.kick()
    return up


def _pending(store_root: Path) -> int:
    from tape_formats.store.chunk_store import ChunkStore
    from tape_formats.store.s3_cache import CacheState, cache_report

    try:
        store, state = ChunkStore(store_root), CacheState(store_root)
    except (OSError, sqlite3.Error):  # no store (yet): nothing pending; a pass would say why
        return 0
    try:
        return cache_report(store, state).pending_bytes
    finally:
        state.close()
        store.close()


def drain(library_root: Path) -> None:
    """``Library.close``: one more pass (its writers have let go of their packs, which may
    now be evicted), then wait for every pass this process asked for."""
    with _REGISTRY:
        up = _UPLOADERS.get(Path(library_root).resolve())
    if up is not None:
        up.kick()
        up.drain()
