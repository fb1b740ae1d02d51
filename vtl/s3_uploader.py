"""The uploader of a library with ``[s3] upload = "auto"``: a background stage that moves new
chunks to the bucket and keeps the local store within ``[s3] cache_size``.

One per library per process (``vtl serve``, the EBM's in-process library, a CLI command
that writes), on a thread of its own. It runs a *pass* when a chunk store of this process
made new chunks durable (a sync point: a filemark without IMMED, an unload; chunk_store.py
calls the remote's ``synced``), when the library opens with uploads left pending (a crash
or a kill between a sync point and its upload: the next start finishes them), and
``Library.close`` waits for the passes asked for so far (``drain``), so a command that
wrote returns with its chunks in the bucket.

A pass (tape_formats/store/s3_cache.py): under a writer marker (vtl/bucket_gc.py: no bucket
collection runs meanwhile) every pack's records past its upload progress are PUT with
``If-None-Match: *``; then this library's reference list is rewritten (the chunks its
recipes name, so a bucket collection keeps those evicted from the cache); then, with a
cache size, the least recently used packs the bucket holds whole are evicted. An error
(the bucket unreachable) is logged and leaves the uploads pending for the next pass: the
data is durable locally meanwhile.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from vtl.s3_settings import S3Settings

log = logging.getLogger("vtl.s3")

_UPLOADERS: dict[Path, Uploader] = {}
_REGISTRY = threading.Lock()


class Uploader:
    """The background stage of one library (module docstring). ``kick`` asks for a pass;
    ``drain`` waits until every pass asked for before it has run."""

    def __init__(self, library_root: Path, store_root: Path, settings: S3Settings) -> None:
        self.library_root, self.store_root, self.settings = library_root, store_root, settings
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
            except Exception as exc:  # the data is durable locally; the next pass retries
                self.last_error = exc
                log.warning("upload to %s failed: %s", self.settings.location, exc)
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

        bucket, prefix = self.settings.target()
        store, state = ChunkStore(self.store_root), CacheState(self.store_root)
        try:
            up = UploadReport()
            if cache_report(store, state).pending_bytes:
                if self._client is None:
                    self._client = self.settings.client()
                who = library_name(self.settings.gateway, self.library_root)
                with uploading(self._client, bucket, prefix, who):
                    up = upload_pending(store, state, self._client, bucket, prefix)
                    put_references(self._client, bucket, prefix, who,
                                   referenced(self.library_root / CARTRIDGE_DIR, store))
            if self.settings.cache_size:
                cache = evict_to(store, state, self.settings.cache_size)
            else:
                cache = cache_report(store, state)
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
    if _pending(Path(store_root)):
        up.kick()
    return up


def _pending(store_root: Path) -> bool:
    from tape_formats.store.chunk_store import ChunkStore
    from tape_formats.store.s3_cache import CacheState, cache_report

    store, state = ChunkStore(store_root), CacheState(store_root)
    try:
        return cache_report(store, state).pending_bytes > 0
    finally:
        state.close()
        store.close()


def drain(library_root: Path) -> None:
    """Wait for the passes this process asked for on the library (``Library.close``)."""
    with _REGISTRY:
        up = _UPLOADERS.get(Path(library_root).resolve())
    if up is not None:
        up.drain()
