"""The lease keeper's local decisions, without an object store (a fake one answers): it
renews the leases of cartridges that are here, marks a copy stale when its lease was taken
over, and lets a lease left recorded by a crash (no cartridge file, no journal) expire."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vtl.leases import (
    CartridgeLeased,
    Lease,
    LeaseKeeper,
    LeaseLost,
    check_not_lost,
    held,
    remember,
)


@dataclass
class FakeStore:
    """Answers renewals as the bucket would; ``taken_over`` lists barcodes another gateway
    took."""

    ttl: int = 2
    taken_over: set[str] = field(default_factory=set)
    renewed: list[str] = field(default_factory=list)

    def renew(self, lease: Lease) -> Lease:
        if lease.barcode in self.taken_over:
            raise LeaseLost(f"lease on {lease.barcode} lost: it is now held by gateway gw-b")
        self.renewed.append(lease.barcode)
        return Lease(lease.barcode, lease.gateway, time.time() + self.ttl, lease.etag + "+")


def lease(barcode: str) -> Lease:
    return Lease(barcode, "gw-a", time.time() + 2, "e0")


def test_the_keeper_renews_local_cartridges_and_marks_taken_over_ones_stale(tmp_path: Path
                                                                          ) -> None:
    (tmp_path / "cartridges").mkdir()
    for bc in ("A00001L8", "A00002L8"):
        (tmp_path / "cartridges" / f"{bc}.vtape").touch()
        remember(tmp_path, lease(bc))
    store = FakeStore(taken_over={"A00002L8"})
    LeaseKeeper(tmp_path, store).renew_all()  # type: ignore[arg-type]
    assert store.renewed == ["A00001L8"]
    assert held(tmp_path)["A00001L8"].etag == "e0+"
    assert "A00002L8" not in held(tmp_path)
    check_not_lost(tmp_path, "A00001L8")
    with pytest.raises(CartridgeLeased, match="held by gateway gw-b.*stale"):
        check_not_lost(tmp_path, "A00002L8")
    remember(tmp_path, lease("A00002L8"))  # taken again (import --from s3): no longer stale
    check_not_lost(tmp_path, "A00002L8")


def test_a_lease_left_by_a_crash_after_its_archive_is_let_expire(tmp_path: Path) -> None:
    (tmp_path / "cartridges").mkdir()
    (tmp_path / "archive-journal").mkdir()
    for bc in ("A00003L8", "A00004L8", "A00005L8"):
        remember(tmp_path, lease(bc))
    (tmp_path / "archive-journal" / "A00004L8.json").write_text("{}")  # being archived
    path = tmp_path / "leases" / "A00003L8.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "taken": time.time() - 10}))  # long before the TTL
    store = FakeStore()
    LeaseKeeper(tmp_path, store).renew_all()  # type: ignore[arg-type]
    assert sorted(store.renewed) == ["A00004L8", "A00005L8"]  # A00005L8: just taken
    assert sorted(held(tmp_path)) == ["A00004L8", "A00005L8"]


def test_the_fence_stops_writes_a_margin_before_the_lease_expires(tmp_path: Path) -> None:
    from vtl.leases import Fence, forget, mark_lost

    fence = Fence(tmp_path, "F00001L8", 10)
    assert fence() is None  # no lease: a cartridge made on this gateway
    now = time.monotonic()
    remember(tmp_path, Lease("F00001L8", "gw-a", time.time() + 10, "e1", 2, now + 8))
    fence._until = 0.0  # (it looks again after its margin; the test does not wait)
    assert fence() is None
    remember(tmp_path, Lease("F00001L8", "gw-a", time.time() + 10, "e2", 2, now - 1))
    fence._until = 0.0  # a renewal made here a TTL - margin ago: lapsed by this clock
    assert "not renewed for a TTL" in fence()
    forget(tmp_path, "F00001L8")  # a record written by another process: its expiry counts
    remember(tmp_path, Lease("F00001L8", "gw-a", time.time() + 1.5, "e3", 2))
    assert "not renewed" in Fence(tmp_path, "F00001L8", 10)()  # 1.5 s left < the 2 s margin
    remember(tmp_path, Lease("F00001L8", "gw-a", time.time() + 9, "e4", 2))
    assert Fence(tmp_path, "F00001L8", 10)() is None
    mark_lost(tmp_path, "F00001L8", "lease on F00001L8 lost: it is now held by gateway gw-b")
    assert "gw-b" in Fence(tmp_path, "F00001L8", 10)()
