"""One pool notion for `vtl` and the EBM: the library's pools table and cartridges.pool are the
truth for both, a pool's retention_days is enforced by EBM retention, and catalogs written with
the EBM's old pool tables are migrated when opened."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from ebm_helpers import OLD_POOL_TABLES, barcodes, make_library, write_tree

from ebm.catalog import Catalog
from ebm.cli import app
from ebm.controller import BackupRequest
from vtl import CATALOG_NAME
from vtl.library import Library

DAY = 86400.0


def test_vtl_and_ebm_share_one_pools_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "lib"
    make_library(root, barcodes(2)).close()
    lib = Library.open(root)
    lib.create_cartridges(["E00003L8"], capacity=1 << 20)  # in the library's Scratch pool
    lib.close()
    app(["--root", str(root), "pool", "create", "weekly", "--retention-days", "30"], prog_name="ebm")
    with pytest.raises(SystemExit):  # one unknown barcode refuses the lot
        app(["--root", str(root), "pool", "add", "weekly", "E00003L8", "NOPE01L8"], prog_name="ebm")
    assert "no cartridge NOPE01L8" in capsys.readouterr().err
    app(["--root", str(root), "pool", "add", "weekly", "E00003L8"], prog_name="ebm")
    capsys.readouterr()
    lib = Library.open(root)
    pools = {p["name"]: p for p in lib.catalog.pools()}
    assert pools["weekly"]["retention_days"] == 30 and "pool" in pools
    assert lib.catalog.cartridge("E00003L8")["pool"] == "weekly"  # membership: one place
    lib.catalog.add_pool("vtlmade", "made by `vtl pool create`")
    lib.close()
    con = sqlite3.connect(root / CATALOG_NAME)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "ebm_pools" not in tables and "ebm_pool_media" not in tables
    cat = Catalog.for_root(root)
    cat.require_pool("vtlmade")  # a pool `vtl` made is a pool the EBM can use
    assert [r["barcode"] for r in cat.pool_media("weekly")] == ["E00003L8"]
    cat.close()
    with pytest.raises(SystemExit):  # the library's pool, so the library's name rules
        app(["--root", str(root), "pool", "create", "bad name"], prog_name="ebm")
    assert "bad pool name" in capsys.readouterr().err


def test_catalog_with_the_old_ebm_pool_tables_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    make_library(root, barcodes(2), pool="daily").close()
    con = sqlite3.connect(root / CATALOG_NAME)  # as the EBM left it before pools were one
    con.executescript(OLD_POOL_TABLES + """
        INSERT INTO ebm_pools VALUES ('daily', 1.0), ('olden', 2.0);
        INSERT INTO ebm_pool_media VALUES ('E00001L8', 'olden', 'append', 7, NULL, 1),
                                          ('E00002L8', 'daily', 'scratch', 0, NULL, 0);
        DROP TABLE ebm_media;
        UPDATE cartridges SET pool = 'Scratch';
    """)
    con.close()
    for _ in range(2):  # idempotent, and a second open takes no write lock for it
        cat = Catalog.for_root(root)
        m = cat.media("E00001L8")
        assert (m["pool"], m["state"], m["append_at"], m["recycled"]) == ("olden", "append", 7, 1)
        assert cat.media("E00002L8")["pool"] == "daily"
        assert {"daily", "olden"} <= set(cat.pools())
        assert not cat.q("SELECT 1 FROM sqlite_master WHERE name IN ('ebm_pools','ebm_pool_media')")
        cat.close()
    lib = Library.open(root)
    assert lib.catalog.cartridge("E00001L8")["pool"] == "olden"
    lib.close()


def _age(cat: Catalog, backup_id: int, days: float) -> None:
    cat.db.execute("UPDATE ebm_backups SET started=? WHERE id=?", (time.time() - days * DAY, backup_id))


def test_pool_retention_days_expires_backups_older_than_that(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {"a": os.urandom(1000)})

    def backup(full: bool = False):
        (src / "a").write_bytes(os.urandom(1000))
        return ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool", full=full))

    old_full, old_incr = backup(), backup()
    chain_base, young_incr = backup(full=True), None
    for b, days in ((old_full, 10), (old_incr, 9), (chain_base, 5)):
        _age(ebm.catalog, b.id, days)
    young_incr = backup()  # no retention on the pool yet: nothing expires
    assert {b.state for b in ebm.catalog.backups("ds")} == {"done"}
    ebm.catalog.db.execute("UPDATE pools SET retention_days=3 WHERE name='pool'")
    newest = backup()
    state = {b.id: b.state for b in ebm.catalog.backups("ds")}
    # older than 3 days expires, except the baseline a young incremental still needs
    assert state == {old_full.id: "expired", old_incr.id: "expired", chain_base.id: "done",
                     young_incr.id: "done", newest.id: "done"}
    ebm.close()


def test_forget_applies_pool_retention_without_keep_rules(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "lib"
    ebm = make_library(root, barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {"a": b"x"})
    old = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    new = ebm.backup(BackupRequest(dataset="ds", full=True))
    _age(ebm.catalog, old.id, 40)
    ebm.close()
    with pytest.raises(SystemExit):  # no rule anywhere: refused, as before
        app(["--root", str(root), "forget"], prog_name="ebm")
    assert "give at least one --keep-* rule" in capsys.readouterr().err
    cat = Catalog.for_root(root)
    cat.db.execute("UPDATE pools SET retention_days=30 WHERE name='pool'")
    cat.close()
    app(["--root", str(root), "forget"], prog_name="ebm")
    assert "expired 1" in capsys.readouterr().out
    cat = Catalog.for_root(root)
    assert {b.id: b.state for b in cat.backups("ds")} == {old.id: "expired", new.id: "done"}
    cat.close()


def test_a_lapsed_lease_skips_a_cartridge_without_marking_it_read_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's lapsed lease write-protects a cartridge only until it is renewed
    (vtl/leases.py): the backup takes the next cartridge, and the first keeps its state."""
    from ebm.drive_session import DriveSession

    root, src = tmp_path / "lib", tmp_path / "src"
    first, second = barcodes(2)
    write_tree(src, {"a.txt": b"a\n"})
    mount = DriveSession.mount

    def fenced_mount(self: DriveSession, barcode: str):
        cart = mount(self, barcode)
        if barcode == first:
            cart.fence = lambda: "lease not renewed for a TTL"
        return cart

    monkeypatch.setattr(DriveSession, "mount", fenced_mount)
    ebm = make_library(root, [first, second])
    try:
        ebm.backup(BackupRequest(dataset="home", source=src, pool="pool"))
        states = {bc: ebm.catalog.media(bc)["state"] for bc in (first, second)}
    finally:
        ebm.close()
    assert states[first] not in ("read-only", "error") and states[second] == "append", states
