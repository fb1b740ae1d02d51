"""Leases: which gateway may hold a cartridge read-write when several libraries ("gateways",
each with its own root) share one bucket.

A lease is one small object, ``<prefix>/leases/<BARCODE>``, JSON ``{"gateway", "expires",
"ttl"}`` (``expires`` in Unix seconds of the holder's clock). It is taken with a conditional
PUT (``If-None-Match: *``: only one of two gateways racing for a free cartridge gets 200, the
other 412), renewed and taken over with ``If-Match: <ETag>`` (only one writer of the version
it read wins), and deleted when the holder archives the cartridge back. radosgw honours both
conditions in unversioned buckets (the ETag given without quotes), not in versioned ones.

The holder keeps what it took in ``<root>/leases/<BARCODE>.json`` (the ETag it last wrote);
``vtl serve`` renews every such lease each ``ttl / 3`` seconds (:class:`LeaseKeeper`). A lease
whose holder stopped renewing (killed, cut off) is free once ``expires`` has passed, by the
clock of the gateway that wants it: clocks must agree to much better than the TTL.
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
log = logging.getLogger(__name__)


class CartridgeLeased(LibraryError):
    """Another gateway holds the cartridge's lease; the message names it and until when."""


class LeaseLost(LibraryError):
    """This gateway's lease was taken over (it expired unrenewed) or deleted."""


@dataclass(frozen=True)
class Lease:
    barcode: str
    gateway: str
    expires: float
    etag: str

    def until(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))


@dataclass(frozen=True)
class LeaseStore:
    """The leases of one bucket prefix, as one gateway sees and takes them."""

    client: Any
    bucket: str
    prefix: str
    gateway: str
    ttl: int

    def key(self, barcode: str) -> str:
        return "/".join(p for p in (self.prefix, LEASE_DIR, barcode) if p)

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
        return Lease(barcode, str(doc["gateway"]), float(doc["expires"]), _etag(r["ETag"]))

    def all(self) -> dict[str, Lease]:
        """Every lease object under the prefix, by barcode (expired ones included)."""
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
    def _put(self, barcode: str, **condition: str) -> Lease:
        expires = time.time() + self.ttl
        body = json.dumps({"gateway": self.gateway, "expires": expires, "ttl": self.ttl})
        r = self.client.put_object(Bucket=self.bucket, Key=self.key(barcode),
                                   Body=body.encode(), ContentType="application/json",
                                   **condition)
        return Lease(barcode, self.gateway, expires, _etag(r["ETag"]))

    def take(self, barcode: str) -> Lease:
        """The lease for this gateway: a free one, an expired one, or one it holds already;
        CartridgeLeased when another gateway's has not expired."""
        from tape_formats.store.s3_objects import error_code

        try:
            return self._put(barcode, IfNoneMatch="*")
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412"):
                raise
        held = self.read(barcode)
        if held is None:  # released between our PUT and GET: try once more
            return self._put(barcode, IfNoneMatch="*")
        if held.gateway != self.gateway and held.expires > time.time():
            raise CartridgeLeased(f"cartridge {barcode} is in use by gateway {held.gateway} "
                                  f"(lease until {held.until()})")
        return self.renew(held)

    def renew(self, lease: Lease) -> Lease:
        """The lease extended by one TTL, if nobody changed it since ``lease.etag``."""
        from tape_formats.store.s3_objects import error_code

        try:
            return self._put(lease.barcode, IfMatch=lease.etag)
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise
        now = self.read(lease.barcode)
        if now is not None and now.gateway == self.gateway:  # ours, by a write we did not
            return self._put(lease.barcode, IfMatch=now.etag)  # record (a crash after it)
        holder = f"gateway {now.gateway}" if now else "nobody (it was deleted)"
        raise LeaseLost(f"lease on {lease.barcode} lost: it is now held by {holder}")

    def release(self, lease: Lease) -> None:
        """Give the lease back (after checking it is still ours, by a renewal)."""
        self.renew(lease)
        self.client.delete_object(Bucket=self.bucket, Key=self.key(lease.barcode))


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
        out[p.stem] = Lease(p.stem, doc["gateway"], doc["expires"], doc["etag"])
    return out


def remember(root: Path, lease: Lease, *, durable: bool = True) -> None:
    """Record a lease this gateway holds (atomically: write, fsync, rename). A renewal's
    record need not be durable: a lease naming this gateway is its own whatever the ETag."""
    _dir(root).mkdir(exist_ok=True)
    path = _dir(root) / f"{lease.barcode}.json"
    taken = json.loads(path.read_text())["taken"] if path.exists() else time.time()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"gateway": lease.gateway, "expires": lease.expires, "etag": lease.etag,
                   "taken": taken}, f)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    (_dir(root) / f"{lease.barcode}.lost").unlink(missing_ok=True)


def forget(root: Path, barcode: str) -> None:
    (_dir(root) / f"{barcode}.json").unlink(missing_ok=True)


def mark_lost(root: Path, barcode: str, why: str) -> None:
    """Forget a lease another gateway took over and mark the local copy stale: mounting it
    is refused (:func:`check_not_lost`) until ``import --from s3`` replaces it."""
    forget(root, barcode)
    (_dir(root) / f"{barcode}.lost").write_text(why + "\n")


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
