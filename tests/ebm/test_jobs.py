"""The manager's job handling: parallel scheduled backups on separate drives and cartridges,
the serial queue, retry of a failing translator, and cleanup of the failed attempt."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, run_cli, write_tree

import ebm.manager as manager
from ebm.catalog import Catalog
from ebm.controller import BackupRequest
from ebm.manager import JobError
from ebm.restore import restore
from translators.base import TranslatorError
from translators.filesystem import FilesystemTranslator


def test_scheduler_runs_due_backups_in_parallel(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    ebm = make_library(root, barcodes(3))
    for name in ("one", "two"):
        src = tmp_path / name
        # small: the job order, drive claims and queue are what is tested, not throughput
        write_tree(src, {f"f{i}": os.urandom(256 << 10) for i in range(4)})
        ebm.ensure_dataset(BackupRequest(dataset=name, source=src, pool="pool"))
        ebm.catalog.add_schedule(name, "daily at 03:00", {"verify": True}, time.time() - 1)
    ebm.close()
    r = run_cli(root, "--json", "scheduler", "--once", "--max-jobs", "2", timeout=300)
    assert r.returncode == 0, r.stderr
    cat = Catalog.for_root(root)
    done = cat.backups(states=["done"])
    assert sorted(b.dataset for b in done) == ["one", "two"]
    # both were started before either finished (parallel, not queued)
    log = r.stderr.splitlines()
    starts = [i for i, line in enumerate(log) if line.startswith("starting scheduled backup")]
    ends = [i for i, line in enumerate(log) if line.startswith("backup of")]
    assert len(starts) == 2 and max(starts) < min(ends)
    # never two jobs on one cartridge at once: same cartridge means disjoint, ordered extents
    va, vb = (cat.volumes(x.id)[0] for x in done)
    if va.barcode == vb.barcode:
        assert va.last_object <= vb.first_object or vb.last_object <= va.first_object
    owners = [r["detail"] for r in cat.q("SELECT detail FROM events WHERE action='drive-claimed'")]
    assert sum(1 for o in owners if o and o.startswith("ebm:")) == 2
    for s in cat.schedules():
        assert s["last_result"] == "ok" and s["next_run"] > time.time()
    # both verifications, then the compaction, one at a time through the serial queue
    serial = [line for line in log if line.startswith("serial step")]
    assert [line.split()[2] for line in serial[::2]] == ["verify", "verify", "catalog"]
    assert serial[1::2] == ["serial step finished: exit 0"] * 3
    cat.close()


class _Flaky(FilesystemTranslator):
    failures = 1

    def backup(self, source, parent_state, writer, *, progress=None):
        if _Flaky.failures > 0:
            _Flaky.failures -= 1
            # write some data first, so the attempt leaves a torn tail on tape
            for i in range(3):
                from tape_formats.archive import ArchiveEntry

                writer.add(ArchiveEntry(path=f"junk{i}", kind="file", size=300_000),
                           os.urandom(300_000))
            raise TranslatorError("source changed under us")
        return super().backup(source, parent_state, writer, progress=progress)


def test_failed_translator_is_retried_and_its_tail_overwritten(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    monkeypatch.setattr(manager, "load_translator", lambda name: _Flaky())
    src = tmp_path / "src"
    write_tree(src, {"a": b"alpha", "b": os.urandom(100_000)})
    _Flaky.failures = 1
    b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"), retries=1)
    states = [(x.state, x.error) for x in ebm.catalog.backups("ds")]
    assert states[0][0] == "failed" and "source changed" in states[0][1]
    assert states[1][0] == "done" and b.state == "done"
    assert ebm.catalog.volumes(b.id)[0].first_object == 0  # the retry overwrote the torn tail
    _Flaky.failures = 5
    (src / "c").write_bytes(b"gamma")
    with pytest.raises(JobError, match="source changed"):
        ebm.backup(BackupRequest(dataset="ds"), retries=1)
    restore(ebm.catalog, ebm.library, lambda n: FilesystemTranslator(), b, tmp_path / "r")
    (src / "c").unlink()
    os.utime(src, ns=(os.stat(tmp_path / "r").st_atime_ns, os.stat(tmp_path / "r").st_mtime_ns))
    assert manifest(tmp_path / "r") == manifest(src)
    ebm.close()


class _NoIncrementals(FilesystemTranslator):
    """A translator that *could* chain (filesystem) but whose class says it does not: the
    manager must go by the attribute, and hand it no parent state."""

    supports_incremental = False
    seen: list = []

    def backup(self, source, parent_state, writer, *, progress=None):
        _NoIncrementals.seen.append(parent_state)
        return super().backup(source, parent_state, writer, progress=progress)


def test_translators_without_incrementals_always_get_a_baseline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from ebm.cli import app

    root = tmp_path / "lib"
    make_library(root, barcodes(1)).close()
    db = tmp_path / "app.dump"
    db.write_bytes(b"a dump")
    src = tmp_path / "src"
    write_tree(src, {"a": b"alpha"})
    cli = ["--root", str(root), "backup"]
    for args in (["db", "--source", str(db), "--pool", "pool", "--translator", "stream"], ["db"]):
        app([*cli, *args], prog_name="ebm")
        out = capsys.readouterr().out
        assert "(full) of db" in out and "full: translator stream has no incrementals" in out, out
    app([*cli, "fs", "--source", str(src), "--pool", "pool"], prog_name="ebm")
    assert "full: dataset fs has no good backup yet" in capsys.readouterr().out
    app([*cli, "fs"], prog_name="ebm")
    out = capsys.readouterr().out
    assert "(incr) of fs" in out and "full:" not in out
    app([*cli, "fs", "--full"], prog_name="ebm")
    assert "full: asked for (--full)" in capsys.readouterr().out
    app(["--root", str(root), "show", "db"], prog_name="ebm")
    assert "full: translator stream has no incrementals" in capsys.readouterr().out
    cat = Catalog.for_root(root)
    assert [(b.level, b.parent) for b in cat.backups("db")] == [("full", None)] * 2
    cat.close()

    ebm = make_library(tmp_path / "lib2", barcodes(1))
    monkeypatch.setattr(manager, "load_translator", lambda name: _NoIncrementals())
    _NoIncrementals.seen = []
    for _ in range(2):
        b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
        assert (b.level, b.parent, b.options["full_reason"]) == (
            "full", None, "translator filesystem has no incrementals")
    assert _NoIncrementals.seen == [None, None]
    ebm.close()
