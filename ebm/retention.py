"""``ebm forget``: retention rules, chain-safe expiry, cartridge recycling.

Rules (restic-like, applied per dataset to *done* backups, newest first):
- keep_last N: the N newest;
- keep_daily/weekly/monthly N: the newest backup of each of the N newest days/ISO weeks/months
  that have one.
- the pool's ``retention_days`` N (``ebm pool create --retention-days N``, or the same in
  ``vtl pool create``): every backup of a dataset whose pool has it, started less than N days
  ago. It applies with or without the rules above, so a pool with a retention also expires
  what is older (the library's one pool notion, enforced here).
A backup is kept if any rule keeps it; a dataset with no rule at all is left alone. Then every kept backup's whole chain (its parent,
grandparent ... baseline) is kept too, because an incremental is useless without it.
Everything else (and every failed backup) expires: its file index rows are dropped and its
state becomes *expired*. A cartridge none of whose backups is still done returns to
*scratch* with append point 0, so the next backup overwrites it from the start.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field, replace

from ebm.catalog import Backup, Catalog


@dataclass
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_within_days: int = 0  # from the dataset's pool (retention_days), not the command line

    def empty(self) -> bool:
        return not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly
                    or self.keep_within_days)


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


def select_kept(backups: list[Backup], policy: Policy, now: float | None = None) -> set[int]:
    newest = sorted(backups, key=lambda b: (b.started, b.id), reverse=True)
    keep = {b.id for b in newest[: policy.keep_last]}
    if policy.keep_within_days:
        since = (time.time() if now is None else now) - policy.keep_within_days * 86400
        keep |= {b.id for b in newest if b.started >= since}
    if policy.keep_daily:
        keep |= _bucket_keep(newest, policy.keep_daily, lambda t: t.date())
    if policy.keep_weekly:
        keep |= _bucket_keep(newest, policy.keep_weekly, lambda t: t.isocalendar()[:2])
    if policy.keep_monthly:
        keep |= _bucket_keep(newest, policy.keep_monthly, lambda t: (t.year, t.month))
    return keep


def pool_policy(catalog: Catalog, policy: Policy, pool: str | None) -> Policy:
    """``policy`` plus the keep-within rule of ``pool``'s ``retention_days`` (if it has one)."""
    row = catalog.pool(pool) if pool else None
    days = row["retention_days"] if row is not None else None
    return replace(policy, keep_within_days=days) if days else policy


def forget(catalog: Catalog, policy: Policy, dataset: str | None = None,
           dry_run: bool = False, now: float | None = None) -> ForgetResult:
    res = ForgetResult()
    rows = [r for r in catalog.datasets() if dataset is None or r["name"] == dataset]
    for ds in rows:
        name = ds["name"]
        rules = pool_policy(catalog, policy, ds["pool"])
        if rules.empty():
            continue  # no rule for this dataset: forgetting everything is never a default
        done = catalog.backups(name, states=["done"])
        keep = select_kept(done, rules, now)
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
    for m in catalog.pool_media():  # the EBM's cartridges, of every pool
        if m["state"] == "scratch" or m["busy"] is not None:
            continue
        live = catalog.q(
            """SELECT 1 FROM ebm_backup_volumes v JOIN ebm_backups b ON b.id=v.backup
               WHERE v.barcode=? AND b.state IN ('done','running') LIMIT 1""", (m["barcode"],))
        if live:
            continue
        with catalog.tx():
            catalog.db.execute(
                "UPDATE ebm_media SET state='scratch', append_at=0, recycled=recycled+1 "
                "WHERE barcode=? AND busy IS NULL", (m["barcode"],))
            catalog.db.execute("DELETE FROM ebm_backup_volumes WHERE barcode=?", (m["barcode"],))
        out.append(m["barcode"])
    return out
