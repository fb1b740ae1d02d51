"""`ebm consolidate`: a synthetic full built from the chain on tape, for the filesystem
(member replacement), SQLite (pages) and volume (chunks) translators. After it the next
incremental's parent is the consolidated full, the old chain can be forgotten, and the latest
point still restores equal to the source."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, run_cli, write_tree

from ebm.consolidate import consolidate
from ebm.controller import BackupRequest, RequestError
from ebm.manager import JobError, load_translator
from ebm.restore import restore
from ebm.retention import Policy, forget

MiB = 1024 * 1024


def _backup(ebm, ds, src=None, translator=None):
    return ebm.backup(BackupRequest(dataset=ds, source=src, pool="pool" if src else None,
                                    translator=translator))


def _restore(ebm, backup, target):
    restore(ebm.catalog, ebm.library, load_translator, backup, target)
    return target


def _consolidate_and_forget(ebm, ds, chain_len):
    old = ebm.catalog.backups(ds, states=["done"])
    assert len(old) == chain_len
    c = consolidate(ebm, ds)
    assert (c.level, c.parent, c.state) == ("full", None, "done")
    assert c.options["consolidated_from"] == [b.uuid for b in old]
    res = forget(ebm.catalog, Policy(keep_last=1), ds)
    assert sorted(b.id for b in res.expired) == sorted(b.id for b in old)
    return c


def test_filesystem_chain_consolidates_and_continues(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {f"d{i % 3}/f{i}": os.urandom(2000 + i) for i in range(12)})
    (src / "link").symlink_to("d0/f0")
    os.link(src / "d1/f1", src / "hard1")
    with open(src / "sparse.img", "wb") as f:
        f.seek(2 * MiB)
        f.write(b"island")
    os.setxattr(src / "d2/f2", "user.k", b"v")
    _backup(ebm, "fs", src)
    (src / "d0/f3").write_bytes(b"edited")
    (src / "d2/f5").unlink()
    _backup(ebm, "fs")
    (src / "new").write_text("added")
    os.link(src / "new", src / "new-link")
    last = _backup(ebm, "fs")
    c = _consolidate_and_forget(ebm, "fs", 3)
    assert c.nfiles == len(manifest(src)) and last.nfiles < c.nfiles
    assert manifest(_restore(ebm, c, tmp_path / "r1")) == manifest(src)
    (src / "d1/f4").write_bytes(b"after consolidation")
    nxt = _backup(ebm, "fs")
    assert (nxt.level, nxt.parent) == ("incr", c.id)
    assert nxt.nfiles <= 3  # only what changed since the chain's last point
    assert manifest(_restore(ebm, nxt, tmp_path / "r2")) == manifest(src)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sqlite_chain_consolidates_pages(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(os.urandom(300),) for _ in range(2000)])
    conn.commit()
    b0 = _backup(ebm, "db", db, "sqlite")
    conn.execute("UPDATE t SET v=x'00' WHERE id=7")
    conn.commit()
    b1 = _backup(ebm, "db")
    assert (b1.level, b1.parent) == ("incr", b0.id) and b1.size < b0.size / 10
    points = []
    for b in (b0, b1):
        out = _restore(ebm, b, tmp_path / f"p{b.id}")
        points.append(_sha(out / "app.db"))
    assert points[0] != points[1]
    c = _consolidate_and_forget(ebm, "db", 2)
    out = _restore(ebm, c, tmp_path / "c")
    assert _sha(out / "app.db") == points[1]
    conn.execute("DELETE FROM t WHERE id < 100")
    conn.commit()
    nxt = _backup(ebm, "db")
    assert (nxt.level, nxt.parent) == ("incr", c.id)
    out = _restore(ebm, nxt, tmp_path / "n")
    check = sqlite3.connect(out / "app.db")
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 1901
    check.close()
    conn.close()


def test_volume_chain_consolidates_chunks(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(12 * MiB)
        f.write(os.urandom(2 * MiB))
    _backup(ebm, "vol", img, "volume")
    with open(img, "r+b") as f:
        f.seek(9 * MiB)
        f.write(b"new data")
        f.seek(0)
        f.write(bytes(MiB))  # the first chunk becomes zero
    b1 = _backup(ebm, "vol")
    assert b1.level == "incr"
    c = _consolidate_and_forget(ebm, "vol", 2)
    out = _restore(ebm, c, tmp_path / "r")
    assert (out / "disk.img").read_bytes() == img.read_bytes()
    assert c.size < 3 * MiB  # two data chunks, the rest holes


def test_consolidate_refusals_are_one_line(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": b"x"})
    _backup(ebm, "fs", src)
    with pytest.raises(JobError, match="already a full"):
        consolidate(ebm, "fs")
    ebm.close()
    r = run_cli(tmp_path / "lib", "consolidate", "nope")
    assert r.returncode == 2 and r.stderr == "error: no dataset 'nope'\n", r.stderr
    (src / "b").write_text("more")
    assert run_cli(tmp_path / "lib", "backup", "fs").returncode == 0
    r = run_cli(tmp_path / "lib", "consolidate", "fs")
    assert r.returncode == 0 and "consolidated from 2 backups" in r.stdout, r.stderr


def test_an_encrypted_chain_needs_its_key_and_stays_encrypted(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    key = tmp_path / "pass"
    key.write_text("correct horse")
    src = tmp_path / "src"
    write_tree(src, {"a": b"secret a", "b/c": b"secret c"})
    ebm.backup(BackupRequest(dataset="enc", source=src, pool="pool", encrypt=True,
                             passphrase_file=key))
    (src / "a").write_bytes(b"changed")
    ebm.backup(BackupRequest(dataset="enc", passphrase_file=key))
    with pytest.raises(RequestError, match="is encrypted"):
        consolidate(ebm, "enc")
    c = consolidate(ebm, "enc", passphrase_file=key)
    assert c.encrypted and c.parent is None
    target = tmp_path / "r"
    restore(ebm.catalog, ebm.library, load_translator, c, target, secret=b"correct horse")
    assert manifest(target) == manifest(src)


def test_a_consolidated_full_survives_a_catalog_rebuild(tmp_path: Path) -> None:
    from ebm.rebuild import rebuild

    ebm = make_library(tmp_path / "lib", barcodes(1))
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(6 * MiB)
        f.write(os.urandom(MiB))
    _backup(ebm, "vol", img, "volume")
    with open(img, "r+b") as f:
        f.seek(4 * MiB)
        f.write(b"incremental")
    _backup(ebm, "vol")
    c = consolidate(ebm, "vol")
    for t in ("ebm_backups", "ebm_backup_volumes", "ebm_files", "ebm_paths", "ebm_states",
              "ebm_datasets", "ebm_media"):  # lose the EBM catalog; tapes alone remain
        ebm.catalog.db.execute(f"DELETE FROM {t}")
    rebuild(ebm.catalog, ebm.library)
    nc = ebm.catalog.backup(c.uuid)
    assert (nc.level, nc.parent) == ("full", None)
    with open(img, "r+b") as f:
        f.seek(5 * MiB)
        f.write(b"after the rebuild")
    nxt = _backup(ebm, "vol")
    assert (nxt.level, nxt.parent) == ("incr", nc.id) and nxt.size < 2 * MiB
    out = _restore(ebm, nxt, tmp_path / "r")
    assert (out / "disk.img").read_bytes() == img.read_bytes()
