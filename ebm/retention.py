"""``ebm forget``: retention rules, chain-safe expiry, cartridge recycling.

Rules (restic-like, applied per dataset to *done* backups, newest first):
- keep_last N: the N newest;
- keep_daily/weekly/monthly N: the newest backup of each of the N newest days/ISO weeks/months
  that have one.
A backup is kept if any rule keeps it. Then every kept backup's whole chain (its parent,
grandparent ... baseline) is kept too, because an incremental is useless without it.
Everything else (and every failed backup) expires: its file index rows are dropped and its
state becomes *expired*. A cartridge none of whose backups is still done returns to
*scratch* with append point 0, so the next backup overwrites it from the start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ebm.catalog import Backup, Catalog


@dataclass
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def empty(self) -> bool:
        return not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly)


@dataclass
class ForgetResult:
    kept: list[Backup] = field(default_factory=list)
    expired: list[Backup] = field(default_factory=list)
    recycled: list[str] = field(default_factory=list)


def _bucket_keep(backups: list[Backup], n: int, key) -> set[int]:
    keep: set[int] = set()
    seen: list[object] = []
    for b in backups:  # newest first
        k = key(dt.datetime.fromtimestamp(b.started))
        if k in seen:
            continue
        if len(seen) >= n:
            break
        seen.append(k)
        keep.add(b.id)
    return keep


def select_kept(backups: list[Backup], policy: Policy) -> set[int]:
    newest = sorted(backups, key=lambda b: (b.started, b.id), reverse=True)
    keep = {b.id for b in newest[: policy.keep_last]}
    if policy.keep_daily:
        keep |= _bucket_keep(newest, policy.keep_daily, lambda t: t.date())
    if policy.keep_weekly:
        keep |= _bucket_keep(newest, policy.keep_weekly, lambda t: t.isocalendar()[:2])
    if policy.keep_monthly:
        keep |= _bucket_keep(newest, policy.keep_monthly, lambda t: (t.year, t.month))
    return keep


def forget(catalog: Catalog, policy: Policy, dataset: str | None = None,
           dry_run: bool = False) -> ForgetResult:
    res = ForgetResult()
    names = [dataset] if dataset else [r["name"] for r in catalog.datasets()]
    for name in names:
        done = catalog.backups(name, states=["done"])
        keep = select_kept(done, policy)
        by_id = {b.id: b for b in done}
        for bid in list(keep):  # never break a chain a kept backup needs
            b = by_id[bid]
            while b.parent is not None and b.parent in by_id:
                keep.add(b.parent)
                b = by_id[b.parent]
        for b in done:
            (res.kept if b.id in keep else res.expired).append(b)
        res.expired += catalog.backups(name, states=["failed"])
    if dry_run:
        return res
    for b in res.expired:
        catalog.drop_backup_index(b.id)
    res.recycled = recycle(catalog)
    return res


def recycle(catalog: Catalog) -> list[str]:
    """Cartridges whose every recorded backup has expired go back to scratch."""
    out = []
    for m in catalog.pool_media():
        if m["state"] == "scratch" or m["busy"] is not None:
            continue
        live = catalog.q(
            """SELECT 1 FROM ebm_backup_volumes v JOIN ebm_backups b ON b.id=v.backup
               WHERE v.barcode=? AND b.state IN ('done','running') LIMIT 1""", (m["barcode"],))
        if live:
            continue
        with catalog.tx():
            catalog.db.execute(
                "UPDATE ebm_pool_media SET state='scratch', append_at=0, recycled=recycled+1 "
                "WHERE barcode=? AND busy IS NULL", (m["barcode"],))
            catalog.db.execute("DELETE FROM ebm_backup_volumes WHERE barcode=?", (m["barcode"],))
        out.append(m["barcode"])
    return out
