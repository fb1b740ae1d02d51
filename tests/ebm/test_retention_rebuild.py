"""Retention (chains never broken, cartridges recycled), catalog rebuild from tapes alone,
schedules, and the CLI's answers to bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, run_cli, write_tree

from ebm.controller import BackupRequest, RequestError, next_run
from ebm.manager import load_translator
from ebm.rebuild import rebuild
from ebm.restore import restore
from ebm.retention import Policy, forget, select_kept


def _bk(ebm, ds, src=None, full=False):
    return ebm.backup(BackupRequest(dataset=ds, source=src, pool="pool" if src else None, full=full))


def test_forget_keeps_chains_and_recycles_cartridges(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(4), capacity=4 << 20)
    src = tmp_path / "src"
    write_tree(src, {"a": os.urandom(2_500_000)})
    b1 = _bk(ebm, "ds", src)  # full on E1 (2.5 MB: E1 nearly full)
    (src / "b").write_bytes(os.urandom(2_500_000))
    b2 = _bk(ebm, "ds")  # incr
    (src / "c").write_bytes(os.urandom(10))
    b3 = _bk(ebm, "ds", full=True)  # new full
    (src / "d").write_bytes(os.urandom(10))
    b4 = _bk(ebm, "ds")  # incr of b3
    # keep-last 1 keeps b4, hence b3 (its parent); b1 and b2 expire
    res = forget(ebm.catalog, Policy(keep_last=1), "ds")
    assert {b.id for b in res.kept} == {b3.id, b4.id}
    assert {b.id for b in res.expired} == {b1.id, b2.id}
    assert ebm.catalog.files(b1.id) == [] and ebm.catalog.backup(b1.id).state == "expired"
    # cartridges holding only expired backups are scratch again, and get reused
    used_by_kept = {v.barcode for b in (b3, b4) for v in ebm.catalog.volumes(b.id)}
    for bc in res.recycled:
        assert bc not in used_by_kept
        m = ebm.catalog.media(bc)
        assert m["state"] == "scratch" and m["append_at"] == 0
    assert res.recycled
    # the kept chain still restores
    restore(ebm.catalog, ebm.library, load_translator, b4, tmp_path / "r")
    assert manifest(tmp_path / "r") == manifest(src)
    ebm.close()


def test_select_kept_daily_weekly_monthly() -> None:
    from ebm.catalog import Backup

    def mk(i: int, day: dt.datetime) -> Backup:
        return Backup(i, f"u{i}", "ds", "full", None, "fs", day.timestamp(), None, 0, 0, 0,
                      None, "done", None, {}, None)

    base = dt.datetime(2026, 1, 1, 12)
    bs = [mk(i, base + dt.timedelta(days=i // 2, hours=i % 2)) for i in range(60)]  # 2/day, 30 days
    assert select_kept(bs, Policy(keep_daily=3)) == {59, 57, 55}
    weekly = select_kept(bs, Policy(keep_weekly=2))
    assert len(weekly) == 2 and 59 in weekly
    assert select_kept(bs, Policy(keep_monthly=5)) == {59}  # all in one month
    assert select_kept(bs, Policy(keep_last=2, keep_daily=1)) == {59, 58}


def test_catalog_rebuild_from_tapes_alone(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(3), capacity=4 << 20)
    src = tmp_path / "src"
    write_tree(src, {f"f{i}": os.urandom(500_000) for i in range(12)})  # spans 2 cartridges
    b1 = _bk(ebm, "ds", src)
    (src / "f0").unlink()
    (src / "new").write_bytes(b"x" * 1000)
    b2 = _bk(ebm, "ds")
    want = manifest(src)
    before = {b.uuid: (b.size, b.sha256, b.nfiles) for b in ebm.catalog.backups()}
    vols_before = {b.uuid: [(v.barcode, v.first_object, v.data_object, v.first_block, v.last_block)
                            for v in ebm.catalog.volumes(b.id)] for b in (b1, b2)}
    # lose the whole EBM catalog
    for t in ("ebm_backups", "ebm_backup_volumes", "ebm_files", "ebm_paths", "ebm_states",
              "ebm_datasets", "ebm_media"):  # pools and cartridges are the library's
        ebm.catalog.db.execute(f"DELETE FROM {t}")
    res = rebuild(ebm.catalog, ebm.library)
    assert sorted(res.backups) == sorted([b1.uuid, b2.uuid])
    after = {b.uuid: (b.size, b.sha256, b.nfiles) for b in ebm.catalog.backups()}
    assert after == before
    for b in ebm.catalog.backups():
        assert [(v.barcode, v.first_object, v.data_object, v.first_block, v.last_block)
                for v in ebm.catalog.volumes(b.id)] == vols_before[b.uuid]
    nb2 = ebm.catalog.backup(b2.uuid)
    assert nb2.parent == ebm.catalog.backup(b1.uuid).id
    restore(ebm.catalog, ebm.library, load_translator, nb2, tmp_path / "r")
    assert manifest(tmp_path / "r") == want
    # the rebuilt catalog continues the chain: the next backup is an incremental
    (src / "later").write_bytes(b"later")
    b3 = _bk(ebm, "ds")
    assert b3.level == "incr" and b3.parent == nb2.id
    ebm.close()


def test_schedules() -> None:
    t = dt.datetime(2026, 11, 25, 14, 7).timestamp()
    assert dt.datetime.fromtimestamp(next_run("daily at 03:00", t)) == dt.datetime(2026, 11, 26, 3, 0)
    assert dt.datetime.fromtimestamp(next_run("hourly", t)) == dt.datetime(2026, 11, 25, 15, 0)
    assert dt.datetime.fromtimestamp(next_run("*/15 * * * *", t)) == dt.datetime(2026, 11, 25, 14, 15)
    assert dt.datetime.fromtimestamp(next_run("weekly on sun at 02:30", t)) == dt.datetime(2026, 11, 29, 2, 30)
    for bad in ("daily at 25:00", "sometimes", "61 * * * *", "0 0 31 2 *"):
        with pytest.raises(RequestError):
            next_run(bad, t)


def test_cli_flow_and_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ebm.cli import app

    root = tmp_path / "lib"
    make_library(root, barcodes(2)).close()
    src = tmp_path / "src"
    write_tree(src, {"a/b.txt": b"hello"})
    r = run_cli(root, "--json", "backup", "ds", "--source", str(src), "--pool", "pool")
    assert r.returncode == 0, r.stderr
    uuid = json.loads(r.stdout)["uuid"]
    app(["--root", str(root), "ls", uuid], prog_name="ebm")
    assert "a/b.txt" in capsys.readouterr().out
    app(["--root", str(root), "--json", "schedule", "add", "ds", "daily at 03:00"], prog_name="ebm")
    assert json.loads(capsys.readouterr().out)["id"] == 1
    bad = [
        ("backup", "nods"),  # unknown dataset, no source
        ("backup", "x", "--source", str(tmp_path / "nope"), "--pool", "pool"),
        ("backup", "y", "--source", str(src), "--pool", "nopool"),
        ("backup", "z", "--source", str(src), "--pool", "pool", "--translator", "nosuch"),
        ("backup", "ds", "--encrypt"),
        ("backup", "bad/name", "--source", str(src), "--pool", "pool"),
        ("restore", "nosuch", "--to", str(tmp_path / "r")),
        ("restore", "ds@notatime", "--to", str(tmp_path / "r")),
        ("restore", "ds", "--to", str(tmp_path / "r"), "--path", "no/such/*"),
        ("restore", "ds"),  # missing --to
        ("show", "99"),
        ("forget", "ds"),  # no rule
        ("forget", "--keep-last", "-1"),
        ("pool", "add", "pool", "NOPE01L8"),
        ("pool", "create", "pool"),
        ("schedule", "add", "ds", "at teatime"),
        ("schedule", "remove", "42"),
        ("dataset", "add", "ds", "--source", str(src), "--pool", "pool"),
        ("verify", "nosuch"),
        ("frobnicate",),
    ]
    for args in bad:  # in-process: the same app object the console script runs
        with pytest.raises(SystemExit) as exc:
            app(["--root", str(root), *args], prog_name="ebm")
        err = capsys.readouterr().err
        assert exc.value.code not in (0, None), args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    for args in (("frobnicate",), ("restore", "nosuch", "--to", str(tmp_path / "r"))):
        r = run_cli(root, *args)  # and as a real process
        assert r.returncode != 0 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli(tmp_path / "nolib", "list")
    assert r.returncode == 2 and r.stderr.startswith("error: no library")  # refused, as vtl


def test_verify_compares_catalog_with_tape(tmp_path: Path) -> None:
    from ebm.verify import verify_backup

    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": os.urandom(1000), "b": os.urandom(2000)})
    b = _bk(ebm, "ds", src)
    assert verify_backup(ebm.catalog, ebm.library, b).ok
    # the catalog drifts from the tape: verify says so, naming the backup
    ebm.catalog.db.execute("UPDATE ebm_files SET sha256=? WHERE backup=? AND kind='file' AND "
                           "path=(SELECT id FROM ebm_paths WHERE path='a')", (bytes(32), b.id))
    vr = verify_backup(ebm.catalog, ebm.library, b)
    assert not vr.ok and any(b.uuid in p for p in vr.problems)
    assert any("differs from the trailer" in p for p in vr.problems)
    ebm.close()


def test_retention_applied_after_each_backup(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {"a": b"1"})
    ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool", retention={"keep_last": 2}))
    for _ in range(3):
        ebm.backup(BackupRequest(dataset="ds", full=True))  # the dataset's rule applies
    assert [b.state for b in ebm.catalog.backups("ds")] == ["expired", "expired", "done", "done"]
    with pytest.raises(RequestError, match="unknown retention rule"):
        ebm.backup(BackupRequest(dataset="ds", retention={"keep_forever": 1}))
    ebm.close()


def test_reaper_sees_through_pid_reuse(tmp_path: Path) -> None:
    import json as _json

    from ebm.catalog import Catalog

    cat = Catalog(tmp_path / "c.sqlite")
    live = cat.begin_backup("ds", "full", None, "filesystem", {})  # this process: alive
    reused = cat.begin_backup("ds", "full", None, "filesystem", {})
    cat.db.execute("UPDATE ebm_backups SET options=? WHERE id=?",
                   (_json.dumps({"pid_start": "1"}), reused.id))  # same pid, other process
    gone = cat.begin_backup("ds", "full", None, "filesystem", {})
    cat.db.execute("UPDATE ebm_backups SET pid=? WHERE id=?", (2**22 + 12345, gone.id))
    reaped = {bid for bid, _ in cat.reap_dead_jobs()}
    assert reaped == {reused.id, gone.id}
    assert cat.backup(live.id).state == "running"
    assert cat.reap_dead_jobs() == []  # a job is reaped once
    cat.close()


def test_catalog_from_before_linkname_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from ebm.catalog import SCHEMA, Catalog

    db = tmp_path / "catalog.sqlite"
    with sqlite3.connect(db) as con:  # the ebm_files table as first released
        con.executescript(SCHEMA.replace("    linkname TEXT,\n", ""))
        assert "linkname" not in {r[1] for r in con.execute("PRAGMA table_info(ebm_files)")}
    for _ in range(2):  # idempotent
        cat = Catalog(db)
        assert "linkname" in {r[1] for r in cat.q("PRAGMA table_info(ebm_files)")}
        cat.close()


def test_restore_refuses_a_non_empty_target_unless_asked(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """A restore is exact: into a directory that already holds something only with
    --into-existing (alias --force), which replaces what the backup holds and keeps the rest."""
    from ebm.cli import app
    from ebm.restore import RestoreError

    root = tmp_path / "lib"
    ebm = make_library(root, barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"backed up", "d/b.txt": b"b"})
    b = _bk(ebm, "ds", src)
    to = tmp_path / "to"
    write_tree(to, {"a.txt": b"local edit", "stray.txt": b"mine"})
    with pytest.raises(RestoreError, match="is not empty.*--into-existing"):
        restore(ebm.catalog, ebm.library, load_translator, b, to)
    ebm.close()
    for args in (["--to", str(to)], ["--to", str(to), "--path", "d/*"],
                 ["--to", str(src / "a.txt"), "--force"]):  # a file is never a target
        with pytest.raises(SystemExit) as exc:
            app(["--root", str(root), "restore", "ds", *args], prog_name="ebm")
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert (to / "a.txt").read_bytes() == b"local edit" and not (to / "d").exists()  # untouched
    app(["--root", str(root), "restore", "ds", "--to", str(to), "--path", "d", "--force"],
        prog_name="ebm")
    assert (to / "d/b.txt").read_bytes() == b"b" and (to / "a.txt").read_bytes() == b"local edit"
    app(["--root", str(root), "restore", "ds", "--to", str(to), "--into-existing"], prog_name="ebm")
    assert "restored" in capsys.readouterr().out
    assert (to / "a.txt").read_bytes() == b"backed up" and (to / "stray.txt").read_bytes() == b"mine"
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing but empty directory is fine without the flag
    app(["--root", str(root), "restore", "ds", "--to", str(empty)], prog_name="ebm")
    assert manifest(empty) == manifest(src)
