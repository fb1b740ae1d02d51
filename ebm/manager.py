"""The manager: runs one backup job end to end, and cleans up after failed ones.

A job: pick the translator (entry point, loaded only now), decide baseline or incremental
(baseline when the dataset has no good backup or ``--full``), record the job as *running*
with our pid, claim a drive, write header / pax data / trailer through the data mover,
sync, and only then record volumes, file index and translator state in one transaction.

Failure handling, and why it is safe:
- The catalog row says *failed*; the job's cartridges are released with their append point
  unchanged, so the next backup LOCATEs to the end of the last good backup and its first
  write cuts off the torn tail (writing before EOD discards the rest of the tape).
- A SIGKILLed job cannot do any of that: the next process finds a *running* row whose pid
  is dead, marks it failed (``Catalog.reap_dead_jobs``) and erases the torn tail from the
  cartridges it held (best effort; otherwise the next backup overwrites it); the library
  drops the dead process's drive claim and the cartridge left in that drive is unloaded.
- Restore reads only what the catalog recorded (done backups); ``catalog rebuild`` accepts a
  backup only when its trailer is on tape. So a torn tail is never mistaken for data.
- A translator failure (not a media failure) is retried (``retries``) as a fresh attempt.

While it runs, a job publishes its bytes, files and rate for the status page
(:mod:`ebm.job_progress`, a small file per job that goes when the job ends).
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ebm.catalog import BLOCK_SIZE, Backup, Catalog, CatalogError, FileRow, IndexStager
from ebm.controller import BackupRequest, RequestError
from ebm.job_progress import JobProgress
from vtl import CATALOG_NAME

# The tape, crypto and compression code is imported by the methods that run a job, so that
# opening the EBM for a listing (``ebm list``) stays fast.
if TYPE_CHECKING:  # the library and the translators are imported only when a job needs them
    from ebm.mover import TapeWriter
    from ebm.remote.drive_encryption import DriveKey
    from ebm.remote.ebm_host import RemoteSpec
    from tape_formats.archive.entry import IndexEntry
    from tape_formats.archive.labels import Base64File
    from tape_formats.archive.writer import PaxWriter
    from translators.base import Progress as TranslatorProgress
    from translators.base import ProgressCallback, Translator
    from vtl.library import Library

FORMAT_VERSION = 1

Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)


class JobError(Exception):
    """A failed job, one line."""


def open_library(root: Path) -> Library:
    """The library at ``root``; none there is :class:`~vtl.errors.NoLibrary` (refused, exit
    2), a damaged one its own one-line :class:`~vtl.errors.LibraryError`."""
    from vtl.library import Library, NoLibrary

    try:
        return Library.open(Path(root))
    except FileNotFoundError:
        raise NoLibrary(f"no library at {root} (create it with `vtl init`)") from None


def load_translator(name: str) -> Translator:
    """The translator plugin ``name`` from the ``ebm.translators`` entry points."""
    from translators.base import load_translator as _load

    try:
        return _load(name)
    except Exception as e:  # unknown name, broken plugin: one line either way
        raise RequestError(f"translator {name!r} is not available: {e}") from None


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def encode_state(state: Any) -> bytes | IO[bytes] | None:
    """The translator state as zstd-compressed compact JSON: what the catalog stores and the
    trailer carries (base64). Why compressed: a 50k-file tree's state is megabytes of JSON,
    and encoding it once, then moving opaque bytes, is what keeps a no-change incremental fast.

    A state the translator hands as ``bytes``, or as a binary file (read from its start; the
    filesystem translator's packed, compressed rows, tens of megabytes at millions of paths),
    is its own encoding: stored as is and given back as a file by :func:`load_state`, so it
    must not start with the zstd magic. A file is streamed into the catalog and the trailer,
    never read whole.
    """
    if state is None:
        return None
    if hasattr(state, "read"):
        state.seek(0)
        head = state.read(len(ZSTD_MAGIC))
        state.seek(0)
    else:
        head = state[:len(ZSTD_MAGIC)] if isinstance(state, bytes) else b""
    if isinstance(state, bytes) or hasattr(state, "read"):
        if head == ZSTD_MAGIC:
            raise ValueError("an opaque translator state must not start with the zstd magic")
        return state
    text = state if isinstance(state, str) else json.dumps(
        state, separators=(",", ":"), check_circular=False)
    raw = text.encode()
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(raw)


def load_state(catalog: Catalog, backup_id: int) -> Any:
    """A backup's translator state as its translator gets it back: JSON decoded, or an opaque
    state as a binary file (copied out of the catalog a chunk at a time, so a parent state of
    millions of paths is streamed, not held). None if none is on record."""
    head = catalog.state_head(backup_id)
    if head is None:
        return None
    kind, first = head
    if kind == "blob" and not first.startswith(ZSTD_MAGIC):
        return catalog.state_file(backup_id)
    return decode_state(catalog.translator_state(backup_id))


@dataclass
class Ebm:
    """The EBM over one library root: catalog + library, opened once per process.

    ``readonly=True`` opens the backup catalog read-only (``Catalog(readonly=True)``: no
    tables created, nothing migrated, no dead job reaped) for commands that only look at
    backups; ``library`` still mounts cartridges for verify and restore, which the media
    catalog records as any cartridge move is.
    """

    root: Path
    # A library on another host (ebm.remote): ``root`` is then the EBM's own catalog directory.
    remote: RemoteSpec | None = None
    readonly: bool = False
    catalog: Catalog = field(init=False)
    _library: Library | None = field(default=None, init=False)
    _drive_key: DriveKey | None = field(default=None, init=False)  # see use_drive_key

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.remote is not None:
            from ebm.remote.ebm_host import prepare_catalog_dir

            prepare_catalog_dir(self.root)
        from vtl.catalog import MediaCatalog
        from vtl.config import CONFIG_NAME

        path = self.root / CATALOG_NAME
        if not path.exists() and not (self.root / CONFIG_NAME).exists():
            from vtl.library import NoLibrary  # the same refusal as vtl's (exit 2)

            raise NoLibrary(f"no library at {self.root} (create it with `vtl init`, or pass --root)")
        # a missing, empty, foreign or garbage catalog is one line (CatalogDamaged) naming the
        # way back, and never replaced by a new file: look at it read-only first
        probe = MediaCatalog(path, readonly=True)
        probe.close()
        try:
            self.catalog = Catalog.for_root(self.root, readonly=self.readonly)
        except sqlite3.DatabaseError as e:
            raise probe.damaged(e) from None
        if self.readonly:
            return
        for _job, held in self.catalog.reap_dead_jobs():
            for barcode in held:
                self.erase_torn_tail(barcode)

    @property
    def library(self) -> Library:
        if self._library is None and self.remote is not None:
            from ebm.remote.ebm_host import register_barcodes

            remote = self.remote.open_library()
            if not self.readonly:  # a read-only catalog knows the cartridges it reads already
                register_barcodes(self.catalog, remote.barcodes(), str(self.remote))
            self._library = remote  # type: ignore[assignment]  # the drive session's part of Library
        if self._library is None:
            self._library = open_library(self.root)
        return self._library

    def use_drive_key(self, key: DriveKey) -> None:
        """Encrypt with the drive's own AES-256-GCM (SSC-4 tape data encryption), not the
        EBM's: the remote library loads ``key`` into the drive for each cartridge and clears
        it afterwards (``ebm.remote.drive_encryption``). A backup so written records the
        key's signature (never the key), so restore and verify ask for it."""
        if self.remote is None:
            raise RequestError("the drive's encryption (--drive-key-file) needs a library on "
                               "another host (--library iscsi://...)")
        self.library.use_drive_key(key)  # type: ignore[attr-defined]  # RemoteLibrary's
        self._drive_key = key

    def check_drive_key(self, backups: list[Backup], key: DriveKey | None) -> None:
        """Refuse, before a drive is touched, to read backups written with the drive's
        encryption without their key (or with another key)."""
        for b in backups:
            need = b.options.get("drive_encryption")
            if need is None:
                continue
            sig = need["key_signature"]
            if key is None:
                raise RequestError(f"backup {b.uuid} was written with the drive's encryption: "
                                   f"give --drive-key-file (the key with signature {sig})")
            if key.signature != sig:
                raise RequestError(f"--drive-key-file is not the key backup {b.uuid} was "
                                   f"written with (signature {key.signature}, needs {sig})")

    def erase_torn_tail(self, barcode: str) -> bool:
        """Best effort: cut a dead job's partial tape files off ``barcode`` now, instead of
        leaving them for the next backup to overwrite, so no reader (EBM or `dd | tar`) ever
        meets them. Safe against a concurrent backup: the append point is re-read *after*
        the cartridge is mounted (flock held), and a busy cartridge is simply skipped."""
        from ebm.drive_session import DriveSession, MediaError
        from vtl.errors import LibraryError

        try:
            session = DriveSession(self.library, "ebm-cleanup", wait=0)
        except (MediaError, LibraryError):
            return False
        try:
            cart = session.mount(barcode)
            row = self.catalog.media(barcode)
            if row is None or row["busy"] is not None or cart.worm or cart.write_protected:
                return False
            at = row["append_at"] if row["state"] in ("append", "full") else 0
            if at >= cart.eod:
                return False
            cart.locate(at)
            cart.erase()
            return True
        except Exception:  # best effort: the next backup overwrites the tail anyway
            return False
        finally:
            session.close()

    def close(self) -> None:
        if self._library is not None:
            with contextlib.suppress(Exception):
                self._library.close()
        self.catalog.close()

    # -- datasets ----------------------------------------------------------------------
    def ensure_dataset(self, req: BackupRequest) -> sqlite3.Row:
        ds = self.catalog.dataset(req.dataset)
        if ds is None:
            if req.source is None or req.pool is None:
                raise RequestError(
                    f"no dataset {req.dataset!r}: give --source and --pool to create it")
            tname = req.translator or "filesystem"
            t = load_translator(tname)
            source = _canonical(t, req.source)  # first: a malformed source is not echoed
            self._validate_source(t, req.source)
            self.catalog.require_pool(req.pool)
            opts = {"retention": req.retention} if any(req.retention.values()) else {}
            self.catalog.add_dataset(req.dataset, tname, source, req.pool, opts)
            ds = self.catalog.dataset(req.dataset)
            assert ds is not None
            return ds
        if req.source is not None and _canonical(load_translator(ds["translator"]),
                                                 req.source) != ds["source"]:
            raise RequestError(f"dataset {req.dataset!r} backs up {ds['source']}, not {req.source}")
        if req.translator is not None and req.translator != ds["translator"]:
            raise RequestError(f"dataset {req.dataset!r} uses translator {ds['translator']!r}")
        return ds

    def _baseline_reason(self, ds: sqlite3.Row, translator: Translator,
                         req: BackupRequest) -> tuple[Backup | None, str]:
        """The parent of an incremental, or (None, why this backup must be a baseline).

        A translator whose class says ``supports_incremental = False`` (stream)
        writes a complete copy every time: giving it a parent would chain restores through
        backups it never needed, and expiring that parent would break a chain for nothing.
        """
        if req.full:
            return None, "asked for (--full)"
        if not translator.supports_incremental:
            return None, f"translator {ds['translator']} has no incrementals"
        parent = self.catalog.last_good(ds["name"])
        if parent is None:
            return None, f"dataset {ds['name']} has no good backup yet"
        return parent, ""

    def dataset_secret(self, ds: sqlite3.Row, req: BackupRequest) -> bytes | None:
        """The secret for this backup of ``ds``, or None for a plaintext one.

        Why the dataset decides, not the run: once a dataset was backed up encrypted, every
        later backup of it (manual or scheduled) must be too, under the same secret, or an
        incremental would lie in plaintext next to encrypted data. The dataset keeps a key
        verifier (salt, KDF params, check value; see ebm.crypto), so a missing or wrong key
        is refused here, before a drive or cartridge is touched. A dataset from before the
        verifier is recognised by its encrypted backups and checked against the newest one.
        """
        from ebm.crypto import check_key, key_verifier, read_secret

        name = ds["name"]
        given = req.encrypt or req.passphrase_file or req.key_file
        secret = read_secret(req.passphrase_file, req.key_file) if given else None
        opts = json.loads(ds["options"] or "{}")
        params = opts.get("encryption")
        what = f"dataset {name}"
        if params is None:
            older = [b for b in self.catalog.backups(name, states=["done"]) if b.encrypted]
            if older:
                params, what = older[-1].options["crypto"], f"dataset {name} (backup {older[-1].uuid})"
        if params is None:
            if secret is not None:
                opts["encryption"] = key_verifier(secret)
                self.catalog.set_dataset_options(name, opts)
            return secret
        if secret is None:
            raise RequestError(f"dataset {name} is encrypted: give --passphrase-file or "
                               "--key-file (its backups are never written in plaintext)")
        check_key(secret, params, what)  # WrongKey: one line, nothing written
        if "encryption" not in opts:
            opts["encryption"] = key_verifier(secret)
            self.catalog.set_dataset_options(name, opts)
        return secret

    def check_dataset_drive_key(self, ds: sqlite3.Row) -> None:
        """Refuse a run (or a schedule) of a drive-encrypted dataset without the drive's key."""
        if self._drive_key is None and json.loads(ds["options"] or "{}").get("drive_encryption"):
            raise RequestError(f"dataset {ds['name']} is backed up with the drive's "
                               "encryption: give --drive-key-file")

    def _dataset_drive_encryption(self, ds: sqlite3.Row) -> None:
        """Once a dataset was backed up with the drive's encryption, every later backup of it
        is too (a dataset property, as ``dataset_secret`` keeps the EBM's own encryption)."""
        self.check_dataset_drive_key(ds)
        opts = json.loads(ds["options"] or "{}")
        if self._drive_key is not None and not opts.get("drive_encryption"):
            opts["drive_encryption"] = True
            self.catalog.set_dataset_options(ds["name"], opts)

    def _apply_excludes(self, ds: sqlite3.Row, req: BackupRequest, t: Translator) -> None:
        """``--exclude`` patterns: kept with the dataset (so scheduled runs skip the same), a
        new list replacing the old; handed to translators that walk a tree (``exclude``)."""
        opts = json.loads(ds["options"] or "{}")
        if "exclude" in req.options:
            opts["exclude"] = list(req.options["exclude"])
            self.catalog.set_dataset_options(ds["name"], opts)
        patterns = tuple(opts.get("exclude") or ())
        if patterns and not hasattr(t, "exclude"):
            raise RequestError(f"translator {ds['translator']} has no excludes")
        if hasattr(t, "exclude"):
            t.exclude = patterns

    @staticmethod
    def _validate_source(t: Translator, source: str | Path) -> None:
        try:
            t.validate_source(str(source))
        except Exception as e:
            raise RequestError(f"bad source {source}: {e}") from None

    # -- backup ------------------------------------------------------------------------
    def backup(self, req: BackupRequest, progress: Progress | None = None,
               retries: int = 1) -> Backup:
        req.validate()
        ds = self.ensure_dataset(req)
        pool = req.pool or ds["pool"]
        if not pool:
            raise RequestError(f"dataset {req.dataset!r} has no pool; give --pool")
        self.catalog.require_pool(pool)  # a one-off --pool override is fine: volumes say where
        translator = load_translator(ds["translator"])
        self._validate_source(translator, ds["source"])
        self._apply_excludes(ds, req, translator)
        secret = self.dataset_secret(ds, req)
        self._dataset_drive_encryption(ds)
        attempt = 0
        while True:
            try:
                b = self._run(ds, pool, translator, req, secret, progress)
                break
            except _TranslatorFailed as e:
                attempt += 1
                if attempt > retries:
                    raise JobError(str(e)) from None
        rules = {k: v for k, v in (req.retention or json.loads(ds["options"] or "{}").get(
            "retention", {})).items() if v}
        from ebm.retention import Policy, forget, pool_policy

        # the request's retention, else the dataset's, with its pool's retention_days: applied
        # after a good backup
        if not pool_policy(self.catalog, Policy(**rules), ds["pool"]).empty():
            forget(self.catalog, Policy(**rules), ds["name"])
        return b

    def run_job(self, ds: sqlite3.Row, pool: str, translator: Translator, req: BackupRequest,
                secret: bytes | None, progress: Progress | None = None) -> Backup:
        """One attempt of a backup job of ``ds`` into ``pool`` with a translator the caller
        prepared (``ebm.consolidate`` hands one whose ``backup`` writes a merged chain):
        header, pax stream and trailer written, synced and recorded as :meth:`backup` does,
        without its dataset checks, retries or retention. A translator failure is a
        :class:`JobError` (the job is recorded failed); so is media trouble."""
        try:
            return self._run(ds, pool, translator, req, secret, progress)
        except _TranslatorFailed as e:
            raise JobError(str(e)) from None

    def _run(self, ds: sqlite3.Row, pool: str, translator: Translator, req: BackupRequest,
             secret: bytes | None, progress: Progress | None) -> Backup:
        from ebm.backup_labels import header_block, trailer_file
        from ebm.crypto import BlockCipher, CryptoError
        from ebm.drive_session import DriveSession, MediaError, PoolMedia
        from ebm.mover import MoverError, TapeWriter
        from tape_formats.archive.packed_index import PackedIndex, stageable
        from tape_formats.cartridge import CartridgeError

        cat = self.catalog
        parent, why_full = self._baseline_reason(ds, translator, req)
        level = "incr" if parent is not None else "full"
        parent_state = None
        if parent is not None:
            parent_state = load_state(cat, parent.id)
            if parent_state is None:  # parent's state lost (rebuilt catalog): baseline
                why_full = f"backup {parent.uuid} has no translator state on record"
                parent, level = None, "full"
        u = str(uuidlib.uuid4())
        cipher = BlockCipher.new(secret, u) if secret is not None else None
        options: dict[str, Any] = {"compress": req.compress, "block_size": BLOCK_SIZE}
        if cipher is not None:
            options["crypto"] = cipher.params
        if self._drive_key is not None:  # the key's signature only: restore asks for the key
            options["drive_encryption"] = {"algorithm": "AES-256-GCM",
                                           "key_signature": self._drive_key.signature}
        if why_full:
            options["full_reason"] = why_full  # `ebm backup` and `ebm show` say why
        backup = cat.begin_backup(ds["name"], level, parent.id if parent else None,
                                  ds["translator"], options, uuid=u)
        tversion = str(translator.version)
        depth = len(cat.chain(parent)) if parent is not None else 0
        hdr_opts = {"pool": pool, "source": ds["source"], "level_name": level,
                    "compress": req.compress}
        if "drive_encryption" in options:  # so a rebuilt catalog still asks for the key
            hdr_opts["drive_encryption"] = options["drive_encryption"]

        def header_for(seq: int) -> bytes:
            first = writer.volumes[-1] if writer and writer.volumes else None
            return header_block(
                uuid=u, dataset=ds["name"], translator=ds["translator"],
                translator_version=tversion, depth=depth,
                parent=parent.uuid if parent else None, created=backup.started,
                block_size=BLOCK_SIZE, data_tape_file=(first.first_file + 1) if first else -1,
                seq=seq, crypto=cipher.params if cipher else None, options=hdr_opts)

        session = None
        writer = None
        state_enc = None
        stager = None
        job = JobProgress(self.root, u, ds["name"], level)  # live numbers for the status page
        try:
            session = DriveSession(self.library, f"ebm:{u}")
            media = PoolMedia(cat, session, pool, backup.id)
            writer = TapeWriter(media, header_for,
                                cipher=cipher, compress=req.compress)
            writer.start()
            pax = _pax_writer(writer)
            if stageable():  # the file index goes into the catalog while the backup writes
                stager = pax.index_sink = IndexStager(cat.path, backup.id)
            try:
                result = translator.backup(ds["source"], parent_state, pax,
                                           progress=_progress_adapter(progress, job))
            except (MoverError, CryptoError, CartridgeError):
                raise  # media trouble, not the translator's: no retry
            except Exception as e:
                raise _TranslatorFailed(f"translator {ds['translator']} failed: {e}") from e
            pax.close()  # end-of-archive blocks
            size, blocks = writer.finish_data()
            digest = pax.stream_digest()  # the member digest: no second hash pass
            entries = result.entries
            if not isinstance(entries, PackedIndex):
                entries = list(entries)  # iterated three times below
            if level == "incr" and result.level_hint == "baseline":
                level, parent = "full", None  # the translator wrote a complete copy after all
                options["full_reason"] = f"translator {ds['translator']} wrote a complete copy"
            state_enc = encode_state(result.state)  # JSON once, for trailer and catalog
            warnings = [str(w) for w in result.warnings]
            with trailer_file(
                    uuid=u, entries=entries, size=size, digest=digest, warnings=warnings,
                    extra={"state": _state_for_trailer(state_enc), "dataset": ds["name"],
                           "level_name": level, "blocks": blocks}) as trailer:
                written = writer.write_trailer(trailer)
            staged = 0
            if stager is not None:
                staged = stager.close()
                if staged and getattr(entries, "sink", None) is not stager:
                    staged = -1  # rows of another index: finish_backup drops them
            vols = []
            for w in written:
                w.volume.backup = backup.id
                vols.append(w.volume)
            cat.finish_backup(
                backup.id, size=size, nfiles=len(entries), blocks=blocks, sha256=digest,
                volumes=vols, files=entries if isinstance(entries, PackedIndex) else map(_row, entries),
                state=state_enc,
                media_updates=[(w.volume.barcode, w.append_at, "full" if w.full else "append")
                               for w in written],
                level=level, parent=parent.id if parent else None, staged=staged,
            )
            if warnings:
                options["warnings"] = warnings[:100]
            if warnings or options.get("full_reason", why_full) != why_full:
                cat.set_backup_options(backup.id, options)
        except BaseException as e:
            msg = str(e) or type(e).__name__
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.abort()
            if stager is not None:  # no staged row lands after fail_backup drops them
                stager.close()
            cat.fail_backup(backup.id, msg)
            if isinstance(e, _TranslatorFailed):
                raise
            if isinstance(e, MoverError | MediaError | CryptoError | CatalogError | CartridgeError):
                raise JobError(f"backup of {ds['name']} failed: {msg}") from None
            raise
        finally:
            job.close()
            if session is not None:
                session.close()
            for spooled in (parent_state, state_enc):  # temporary files: closing deletes them
                if hasattr(spooled, "close"):
                    spooled.close()
        return cat.backup(backup.id)


class _TranslatorFailed(Exception):
    pass


def _canonical(t: Translator, source: str | Path) -> str:
    """The source as the catalog keeps it (the translator's spelling: a path made absolute,
    a connection string normalised); a malformed one is a bad request, whose message does not
    repeat the source (it may hold what must not be shown, such as a password)."""
    try:
        return t.canonical_source(str(source))
    except Exception as e:
        raise RequestError(f"bad source: {e}") from None


def _pax_writer(out: TapeWriter) -> PaxWriter:
    """A PaxWriter onto the data tape file; its stream digest goes into the trailer (hashed
    on a thread of its own: off the writing thread, the backup's critical path)."""
    from tape_formats.archive.writer import PaxWriter

    return PaxWriter(out, start_offset=0, digest_behind=True)


def _progress_adapter(progress: Progress | None, job: JobProgress) -> ProgressCallback:
    """Translators report Progress objects: the job's published numbers take them all, our
    bars (done, total) bytes."""
    def cb(p: TranslatorProgress) -> None:
        job.update(p.bytes_done, p.bytes_total, p.entries_done, p.entries_total)
        if progress is not None:
            progress(p.bytes_done, p.bytes_total)
    return cb


def _row(e: IndexEntry) -> FileRow:
    return FileRow(
        path=e.path, kind=e.kind, size=e.size, mtime_ns=e.mtime_ns, mode=e.mode, uid=e.uid,
        gid=e.gid, sha256=bytes.fromhex(e.sha256) if e.sha256 else None,
        header_offset=e.header_offset, data_offset=e.data_offset, deleted=e.deleted,
        linkname=e.linkname or None,
    )


def _state_for_trailer(state: bytes | str | IO[bytes] | None) -> str | Base64File | None:
    """The state as the trailer's ``extra`` holds it: ``b:`` and base64 (a file streamed so,
    not read whole), or ``s:`` and text from an older catalog."""
    from tape_formats.archive.labels import Base64File

    if state is None:
        return None
    if isinstance(state, str):
        return "s:" + state
    if isinstance(state, bytes):
        return "b:" + base64.b64encode(state).decode()
    return Base64File("b:", state)


def state_from_b64(text: str | None) -> bytes | str | None:
    if not text:
        return None
    return text[2:] if text.startswith("s:") else base64.b64decode(text[2:])


def decode_state(raw: bytes | str) -> Any:
    if isinstance(raw, bytes) and raw.startswith(ZSTD_MAGIC):
        import zstandard

        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return raw
    if isinstance(raw, bytes):
        return raw  # an opaque state some translator chose to keep as bytes
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def now() -> float:
    return time.time()
