"""Leases: which gateway may hold a cartridge read-write when several libraries ("gateways",
each with its own root) share one bucket.

A lease is one small object, ``<prefix>/leases/<BARCODE>``, JSON ``{"gateway", "expires",
"ttl", "generation"}`` (``expires`` in Unix seconds of the holder's clock). It is taken with a
conditional PUT (``If-None-Match: *``: only one of two gateways racing for a free cartridge
gets 200, the other 412), renewed and taken over with ``If-Match: <ETag>`` (only one writer of
the version it read wins), and given back by writing it *released* (``gateway`` empty), so
the object keeps its ``generation``: the fencing token, one more at every take-over, which
goes into every archive manifest the holder uploads (vtl/archive.py). radosgw honours both
conditions in unversioned buckets (the ETag given without quotes), not in versioned ones.

Fencing, for a holder cut off from the bucket or paused while it still runs:
- the holder takes its lease as lost at its last successful renewal + ``ttl`` - ``margin``
  by its own monotonic clock (:class:`Fence`, asked by the cartridge before each write: the
  drive then reports the cartridge write protected);
- a taker waits until ``expires`` + ``grace`` by its clock (``margin`` and ``grace`` are each
  a fifth of the TTL), so the two are apart by 0.4 TTL and a clock skew below that;
- an archive uploaded late by a holder that lost its lease carries an older generation than
  the new holder's: readers take the archive of the highest (generation, id), and a holder
  deletes only archives below its own.

The holder keeps what it took in ``<root>/leases/<BARCODE>.json`` (the ETag it last wrote);
``vtl serve`` renews every such lease each ``ttl / 3`` seconds (:class:`LeaseKeeper`).
This module knows the bucket and the local lease files, nothing of cartridge files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtl.errors import LibraryError

LEASE_DIR = "leases"
RENEW_THREADS = 8  # a keeper round's parallel renewals
FENCE_FRACTION = 0.2  # of the TTL: the holder's margin, and the takers' grace
log = logging.getLogger(__name__)
# barcode -> monotonic time this process's lease on it lapses (renewals made here)
_fence_at: dict[tuple[str, str], float] = {}


class CartridgeLeased(LibraryError):
    """Another gateway holds the cartridge's lease; the message names it and until when."""


class LeaseLost(LibraryError):
    """This gateway's lease was taken over (it expired unrenewed) or deleted."""


def margin(ttl: float) -> float:
    """How long before its lease's expiry a holder stops writing."""
    return ttl * FENCE_FRACTION


def grace(ttl: float) -> float:
    """How long past a lease's expiry a taker still waits (clock skew, a paused holder)."""
    return ttl * FENCE_FRACTION


@dataclass(frozen=True)
class Lease:
    barcode: str
    gateway: str  # "" when released
    expires: float
    etag: str
    generation: int = 0  # the fencing token: one more at every take-over
    fence_at: float = 0.0  # monotonic time this process must stop writing (0: not known)

    def until(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))

    def free(self, ttl: float, now: float | None = None) -> bool:
        """Released, or expired for longer than the grace."""
        now = time.time() if now is None else now
        return not self.gateway or self.expires + grace(ttl) < now


@dataclass(frozen=True)
class LeaseStore:
    """The leases of one bucket prefix, as one gateway sees and takes them."""

    client: Any
    bucket: str
    prefix: str
    gateway: str
    ttl: int
    folder: str = LEASE_DIR  # another for other leases (the bucket collector's, "gc")

    def key(self, barcode: str) -> str:
        return "/".join(p for p in (self.prefix, self.folder, barcode) if p)

    # ---- reading --------------------------------------------------------------------------
    def read(self, barcode: str) -> Lease | None:
        from tape_formats.store.s3_objects import error_code

        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key(barcode))
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        doc = json.loads(r["Body"].read())
        return Lease(barcode, str(doc["gateway"]), float(doc["expires"]), _etag(r["ETag"]),
                     int(doc.get("generation", 0)))

    def all(self) -> dict[str, Lease]:
        """Every lease object under the prefix, by barcode (expired and released included)."""
        start = self.key("-")[:-1]
        out = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start)
        for page in pages:
            for obj in page.get("Contents", []):
                lease = self.read(obj["Key"][len(start):])
                if lease is not None:
                    out[lease.barcode] = lease
        return out

    # ---- taking, renewing, giving back ----------------------------------------------------
    def _put(self, barcode: str, generation: int, *, gateway: str | None = None,
             **condition: str) -> Lease:
        sent = time.monotonic()
        gateway = self.gateway if gateway is None else gateway
        expires = time.time() + self.ttl if gateway else 0.0
        body = json.dumps({"gateway": gateway, "expires": expires, "ttl": self.ttl,
                           "generation": generation})
        r = self.client.put_object(Bucket=self.bucket, Key=self.key(barcode),
                                   Body=body.encode(), ContentType="application/json",
                                   **condition)
        fence_at = sent + self.ttl - margin(self.ttl)
        return Lease(barcode, gateway, expires, _etag(r["ETag"]), generation, fence_at)

    def take(self, barcode: str) -> Lease:
        """The lease for this gateway: a free one (generation 1), a released or expired one
        (taken over: generation + 1), or one it holds already (renewed); CartridgeLeased when
        another gateway's has not expired, grace included."""
        from tape_formats.store.s3_objects import error_code

        try:
            return self._put(barcode, 1, IfNoneMatch="*")
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412"):
                raise
        held = self.read(barcode)
        if held is None:  # deleted between our PUT and GET: try once more
            return self._put(barcode, 1, IfNoneMatch="*")
        if held.gateway == self.gateway:  # ours: renewed, or (expired) taken over at once
            if held.expires > time.time():
                return self.renew(held)
        elif not held.free(self.ttl):
            raise CartridgeLeased(f"cartridge {barcode} is in use by gateway {held.gateway} "
                                  f"(lease until {held.until()})")
        try:
            return self._put(barcode, held.generation + 1, IfMatch=held.etag)
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise
        now = self.read(barcode)  # another taker of the same version won
        raise CartridgeLeased(f"cartridge {barcode} is in use by gateway "
                              f"{now.gateway if now else 'another gateway'}")

    def renew(self, lease: Lease) -> Lease:
        """The lease extended by one TTL, same generation, if nobody changed it since
        ``lease.etag``."""
        from tape_formats.store.s3_objects import error_code

        try:
            return self._put(lease.barcode, lease.generation, IfMatch=lease.etag)
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise
        now = self.read(lease.barcode)
        if (now is not None and now.gateway == self.gateway
                and now.generation == lease.generation):  # ours, by a write we did not
            return self._put(lease.barcode, now.generation, IfMatch=now.etag)  # record
        holder = f"gateway {now.gateway}" if now and now.gateway else "nobody (it was released)"
        raise LeaseLost(f"lease on {lease.barcode} lost: it is now held by {holder}")

    def release(self, lease: Lease) -> None:
        """Give the lease back: written released (if still ours), keeping its generation."""
        held = self.renew(lease)
        self._put(lease.barcode, held.generation, gateway="", IfMatch=held.etag)


def _etag(raw: str) -> str:
    return raw.strip('"')  # radosgw compares If-Match with the unquoted ETag


def store_for(lib: Any, client: Any) -> LeaseStore | None:
    """The lease store of a library that is one gateway of several (``[s3] gateway`` set)."""
    s3 = lib.config.s3
    if not s3.gateway:
        return None
    bucket, prefix = s3.target()
    return LeaseStore(client, bucket, prefix, s3.gateway, s3.lease_ttl)


# ---- what this gateway holds (local) --------------------------------------------------------
def _dir(root: Path) -> Path:
    return root / LEASE_DIR


@contextlib.contextmanager
def local_lock(root: Path) -> Iterator[None]:
    """Serialises the keeper's renewals with the CLI taking and giving back leases."""
    _dir(root).mkdir(exist_ok=True)
    with open(_dir(root) / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def held(root: Path) -> dict[str, Lease]:
    out = {}
    for p in _dir(root).glob("*.json"):
        doc = json.loads(p.read_text())
        out[p.stem] = Lease(p.stem, doc["gateway"], doc["expires"], doc["etag"],
                            int(doc.get("generation", 0)))
    return out


def remember(root: Path, lease: Lease, *, durable: bool = True) -> None:
    """Record a lease this gateway holds (atomically: write, fsync, rename). A renewal's
    record need not be durable: a lease naming this gateway is its own whatever the ETag."""
    _dir(root).mkdir(exist_ok=True)
    path = _dir(root) / f"{lease.barcode}.json"
    taken = json.loads(path.read_text())["taken"] if path.exists() else time.time()
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"gateway": lease.gateway, "expires": lease.expires, "etag": lease.etag,
                   "generation": lease.generation, "taken": taken}, f)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if lease.fence_at:
        _fence_at[(str(root), lease.barcode)] = lease.fence_at
    (_dir(root) / f"{lease.barcode}.lost").unlink(missing_ok=True)


def forget(root: Path, barcode: str) -> None:
    _fence_at.pop((str(root), barcode), None)
    (_dir(root) / f"{barcode}.json").unlink(missing_ok=True)


def mark_lost(root: Path, barcode: str, why: str) -> None:
    """Forget a lease another gateway took over and mark the local copy stale: mounting it
    is refused (:func:`check_not_lost`) until ``import --from s3`` replaces it."""
    (_dir(root) / f"{barcode}.lost").write_text(why + "\n")  # first: a Fence never sees
    forget(root, barcode)  # neither the marker nor the record


def lost(root: Path, barcode: str) -> str | None:
    """Why this gateway's copy of ``barcode`` is stale, None when it is not."""
    try:
        return (_dir(root) / f"{barcode}.lost").read_text().strip()
    except FileNotFoundError:
        return None


def check_not_lost(root: Path, barcode: str) -> None:
    why = lost(root, barcode)
    if why is not None:
        raise CartridgeLeased(f"{why}; this copy is stale ('vtl cartridge import --from s3 "
                              f"{barcode}' replaces it with the current one)")


class Fence:
    """Asked by a mounted cartridge of a gateway before each write (``TapeCartridge.fence``):
    None while this gateway's lease on it is good, else why not (the drive then reports the
    cartridge write protected). Good means: not marked lost, and before the last successful
    renewal + TTL - margin, by the monotonic clock when the renewal was made in this process
    (``vtl serve``'s keeper), else by the expiry the local lease record holds (a renewal
    made by another process of this gateway). A cartridge made here and never archived has
    no lease and is not fenced. Costs a clock read per write; the files are read again only
    when the known deadline has passed."""

    def __init__(self, root: Path, barcode: str, ttl: float) -> None:
        self.root, self.barcode, self.ttl = root, barcode, ttl
        self._until = 0.0
        self._why: str | None = None

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now < self._until:
            return None
        self._until, self._why = self._deadline(now)
        return None if now < self._until else self._why

    def _deadline(self, now: float) -> tuple[float, str | None]:
        why = lost(self.root, self.barcode)
        if why is not None:
            return 0.0, why
        mono = _fence_at.get((str(self.root), self.barcode))
        if mono is None:
            try:
                doc = json.loads((_dir(self.root) / f"{self.barcode}.json").read_text())
            except FileNotFoundError:
                return now + margin(self.ttl), None  # no lease: a cartridge made here
            mono = now + float(doc["expires"]) - margin(self.ttl) - time.time()
        return mono, (f"lease on {self.barcode} not renewed for a TTL ({self.ttl:g} s): "
                      f"another gateway may hold it now")


class LeaseKeeper:
    """The thread in ``vtl serve`` (and in a running archive or retrieve) that renews this
    gateway's leases every ``ttl / 3`` seconds while their cartridges are local; a lease
    found lost is logged and forgotten, and so is one recorded more than a TTL ago whose
    cartridge has no local file (left by a crash after its archive)."""

    def __init__(self, root: Path, store: LeaseStore) -> None:
        self.root, self.store = root, store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def renew_all(self) -> None:
        """One round: the PUTs on up to RENEW_THREADS threads (each waits ~10-30 ms on the
        store), the local records written as the answers come."""
        from concurrent.futures import ThreadPoolExecutor

        with local_lock(self.root):
            here = self._local_barcodes()
            due = []
            for lease in held(self.root).values():
                if lease.barcode not in here and self._stale(lease.barcode):
                    log.warning("lease on %s: the cartridge is not here, letting it expire",
                                lease.barcode)
                    forget(self.root, lease.barcode)
                else:
                    due.append(lease)
            if len(due) <= 1:
                for lease in due:
                    self._renew_one(lease)
                return
            with ThreadPoolExecutor(min(RENEW_THREADS, len(due))) as pool:
                list(pool.map(self._renew_one, due))

    def _renew_one(self, lease: Lease) -> None:
        try:
            remember(self.root, self.store.renew(lease), durable=False)
        except LeaseLost as exc:
            log.error("%s; cartridge %s is no longer this gateway's", exc, lease.barcode)
            mark_lost(self.root, lease.barcode, str(exc))
        except Exception as exc:  # the store unreachable: try again next round
            log.warning("renewing the lease on %s failed: %s", lease.barcode, exc)

    def _local_barcodes(self) -> set[str]:
        """Barcodes with a file here (the cartridge, a sidecar, one being retrieved)."""
        from vtl.library import CARTRIDGE_DIR, CARTRIDGE_EXT

        try:
            names = os.listdir(self.root / CARTRIDGE_DIR)
        except FileNotFoundError:
            return set()
        return {n.partition(CARTRIDGE_EXT)[0] for n in names if CARTRIDGE_EXT in n}

    def _stale(self, barcode: str) -> bool:
        """With no file of the cartridge here: no archive or retrieval journal entry
        either, and taken more than a TTL ago."""
        if (self.root / "archive-journal" / f"{barcode}.json").exists():
            return False
        taken = json.loads((_dir(self.root) / f"{barcode}.json").read_text())["taken"]
        return time.time() - taken > self.store.ttl

    def _run(self) -> None:
        interval = max(self.store.ttl / 3, 0.2)
        while not self._stop.is_set():
            self.renew_all()
            self._stop.wait(interval)


@contextlib.contextmanager
def kept(root: Path, store: LeaseStore | None) -> Iterator[None]:
    """Renew this gateway's leases while the body runs (an archive or a retrieval may take
    longer than a TTL, with or without ``vtl serve``)."""
    if store is None:
        yield
        return
    keeper = LeaseKeeper(root, store).start()
    try:
        yield
    finally:
        keeper.stop()
