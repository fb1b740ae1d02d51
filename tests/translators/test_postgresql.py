"""The postgresql translator against a real PostgreSQL (Debian's package, started per test in
a temp directory by tests/support/pg_cluster.py): base backup + archived WAL onto real
cartridges, point-in-time restore that a real server recovers from, the logical export as
plain CSV, and one clear error for each bad input with nothing half-restored."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, run_cli
from pg_cluster import PgCluster, free_port, pg_bindir

from ebm.consolidate import consolidate
from ebm.controller import BackupRequest, RequestError
from ebm.manager import JobError, decode_state, load_translator
from ebm.points import resolve_point
from ebm.restore import RestoreError, restore
from ebm.wal_fetch import WalNotInChain, fetch, fetch_options, fetch_program
from ebm.wal_spool import WalSpool, serve
from translators.base import TranslatorError
from translators.pg.wal import parse_lsn

pytestmark = pytest.mark.skipif(
    pg_bindir() is None,
    reason="PostgreSQL server binaries missing (scripts/setup.sh installs Debian's postgresql)")


@pytest.fixture
def pg():
    with PgCluster() as cluster:
        yield cluster


def _library(tmp_path: Path):
    return make_library(tmp_path / "lib", barcodes(2), capacity=256 << 20)


def _served_library(pg: PgCluster):
    """A library the restored server's restore_command (`ebm wal-fetch`, run as the
    server's OS user) can open: inside the cluster's directory, handed to that user before
    a recovery starts (:func:`_rows_after_recovery`)."""
    return make_library(pg.dir / "lib", barcodes(2), capacity=256 << 20)


def _backup(ebm, source: str | None = None, dataset: str = "pg", **kw):
    req = BackupRequest(dataset=dataset, source=source, pool="pool" if source else None,
                        translator="postgresql" if source else None, **kw)
    return ebm.backup(req, retries=0)


def _restore(ebm, dataset: str, target: Path, program: list[str] | None = None,
             **point) -> None:
    """What `ebm restore DATASET[@TIME] [--lsn] [--as]` does, in-process (the CLI costs a
    second or two per start on a busy machine; one test goes through it): with ``program``
    (how the server's user runs ``ebm``) restore_command fetches WAL from tape, without it
    the WAL goes into pg_wal as with ``--wal-local``."""
    backup, options = resolve_point(ebm.catalog, dataset, load_translator("postgresql"), **point)
    if options["form"] == "physical" and program is not None:
        options.update(fetch_options(ebm.root, ebm.catalog, backup, program))
    restore(ebm.catalog, ebm.library, load_translator, backup, target, options=options)


def _run_ebm_as_server(pg: PgCluster, datadir: Path) -> None:
    """Point the restore_command that `ebm restore` wrote at the program the test server's
    user can run (:meth:`PgCluster.fetch_program`); the rest of the line stays as written."""
    conf = datadir / "postgresql.auto.conf"
    mine = " ".join(map(shlex.quote, fetch_program()))
    theirs = " ".join(map(shlex.quote, pg.fetch_program()))
    conf.write_text(conf.read_text().replace(f"'{mine} ", f"'{theirs} "))


def _insert(pg: PgCluster, i: int) -> float:
    """Commit row ``i``; the server's clock just after the commit."""
    pg.sql(f"INSERT INTO t VALUES ({i}, 'row {i}')")
    return float(pg.sql("SELECT extract(epoch FROM clock_timestamp())"))


def _rows_after_recovery(pg: PgCluster, datadir: Path) -> list[int]:
    pg.own(pg.dir / "lib")  # restore_command runs as the server's user
    port = free_port()
    pg.start(datadir, port=port)
    try:
        for _ in range(200):  # promotion after the target: wait until it takes writes
            if pg.sql("SELECT pg_is_in_recovery()", port=port) == "f":
                break
            time.sleep(0.05)
        return [int(x) for x in pg.sql("SELECT i FROM t ORDER BY i", port=port).split()]
    finally:
        pg.stop_server(datadir)


def test_point_in_time_restore_recovers_exactly_the_commits_before_it(tmp_path, pg):
    ebm = _served_library(pg)
    pg.sql("CREATE TABLE t (i int PRIMARY KEY, s text)")
    src = pg.source(ebm_logical="on")
    base = _backup(ebm, src)
    assert base.level == "full"
    _insert(pg, 1)
    between = _insert(pg, 2)
    lsn_between = pg.sql("SELECT pg_current_wal_lsn()")
    time.sleep(0.2)
    _insert(pg, 3)
    pg.sql("SELECT pg_switch_wal()")
    _insert(pg, 4)
    pg.sql("SELECT pg_switch_wal()")
    _insert(pg, 5)
    incr = _backup(ebm)
    assert incr.level == "incr"

    latest = pg.dir / "latest"
    _restore(ebm, "pg", latest, pg.fetch_program())
    segment = decode_state(ebm.catalog.translator_state(incr.id))["segments"][-1]
    assert not (latest / "pg_wal" / segment["name"]).exists()  # restore_command fetches it
    seeded = WalSpool(str(latest / "pg_wal" / "ebm-prefetch"), incr.uuid)
    assert seeded.in_chain(segment["name"]) and seeded.in_chain("00000002.history") is False
    at_lsn = pg.dir / "at-lsn"
    _restore(ebm, "pg", at_lsn, lsn=lsn_between)  # --wal-local: no restore_command
    assert "restore_command = 'false'" in (at_lsn / "postgresql.auto.conf").read_text()
    plain = tmp_path / "csv"
    _restore(ebm, "pg", plain, form="csv")
    fetched = tmp_path / "fetched"
    fetch(ebm.catalog, ebm.library, incr, segment["name"], fetched)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == segment["sha256"]
    # Asked for the first segment, wal-fetch reads the next ones into the spool in the same
    # pass; restore_command's light entry then hands them over without the tape.
    first, *ahead = [s for s in decode_state(ebm.catalog.translator_state(incr.id))["segments"]]
    spool = WalSpool(str(tmp_path / "spool"), incr.uuid)
    fetch(ebm.catalog, ebm.library, incr, first["name"], fetched, spool=spool)
    assert sorted(os.listdir(spool.path)) == [".chain", *(s["name"] for s in ahead)] != [".chain"]
    assert spool.in_chain(first["name"]) and spool.in_chain("00000002.history") is False
    assert serve(["--root", "lib", "wal-fetch", incr.uuid, "--spool", spool.root,
                  ahead[0]["name"], str(fetched)])
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == ahead[0]["sha256"]
    assert sorted(os.listdir(spool.path)) == [".chain", *(s["name"] for s in ahead)]
    with pytest.raises(WalNotInChain):
        fetch(ebm.catalog, ebm.library, incr, "00000001000000000000FFFF", fetched)
    ebm.close()  # as after `ebm restore`: nothing else holds the catalog while they recover
    assert _rows_after_recovery(pg, latest) == [1, 2, 3, 4, 5]
    assert not (latest / "pg_wal" / "ebm-prefetch").exists()  # gone at the end of the archive
    assert _rows_after_recovery(pg, at_lsn) == [1, 2]

    to_time = pg.dir / "at-time"
    r = run_cli(pg.dir / "lib", "restore", f"pg@{between}", "--to", str(to_time))
    assert r.returncode == 0, r.stderr
    conf = (to_time / "postgresql.auto.conf").read_text()
    assert "recovery_target_time" in conf and " wal-fetch " in conf
    assert "recovery_end_command = 'rm -rf pg_wal/ebm-prefetch'" in conf
    assert not (to_time / "pg_wal" / segment["name"]).exists()
    _run_ebm_as_server(pg, to_time)
    assert _rows_after_recovery(pg, to_time) == [1, 2]
    # Not "not found" (exit 1, the end of the archive) but "stop recovery" (above 125).
    r = run_cli(pg.dir / "lib", "wal-fetch", "no-such-backup", segment["name"], str(fetched))
    assert r.returncode == 126 and r.stderr.count("\n") == 1, r.stderr
    with open(plain / "tables" / "public.t.csv", newline="") as f:
        assert [row[0] for row in csv.reader(f)] == ["i", "1", "2", "3", "4", "5"]
    assert "CREATE TABLE public.t" in (plain / "schema-pre.sql").read_text()
    assert "\\copy \"public\".\"t\" FROM" in (plain / "load.sql").read_text()


def _waldump_commits(pg: PgCluster, segs: list[dict]) -> list[tuple]:
    """Each segment's first and last commit time as ``pg_waldump`` prints them: the
    cross-check of the translator's own record reader on real WAL."""
    out = subprocess.run(
        [str(pg.bin / "pg_waldump"), "--rmgr=Transaction", "-p", str(pg.spool),
         segs[0]["name"], segs[-1]["name"]], capture_output=True, text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}).stdout
    times: dict[int, list[float]] = {}
    for m in re.finditer(r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: COMMIT (\S+ \S+) UTC", out):
        when = dt.datetime.fromisoformat(m.group(2)).replace(tzinfo=dt.UTC).timestamp()
        times.setdefault(parse_lsn(m.group(1)) >> 20, []).append(when)  # 1 MiB segments
    found = [times.get(parse_lsn(s["start_lsn"]) >> 20) for s in segs]
    return [(round(t[0], 6), round(t[-1], 6)) if t else (None, None) for t in found]


def test_wal_catalogue_has_lsn_ranges_sha256_and_commit_times(tmp_path, pg, monkeypatch):
    ebm = _library(tmp_path)
    pg.sql("CREATE TABLE t (i int PRIMARY KEY, s text)")
    _backup(ebm, pg.source())
    before = time.time()
    pg.sql("CREATE TABLE u (i int)")  # a commit whose WAL record carries invalidations
    _insert(pg, 1)
    # Commits on both sides of 1 MiB segment boundaries, and segments with none inside.
    pg.sql("INSERT INTO u SELECT generate_series(1, 60000)")
    for i in range(2, 40):
        pg.sql(f"INSERT INTO t SELECT {i}, string_agg(md5((g * {i})::text), '') "
               "FROM generate_series(1, 700) g")
    incr = _backup(ebm)
    state = decode_state(ebm.catalog.translator_state(incr.id))
    segs = state["segments"]
    assert state["commit_times_complete"] and len(segs) > 4
    ours = [tuple(t and round(t, 6) for t in (s["first_commit"], s["last_commit"]))
            for s in segs]
    assert ours == _waldump_commits(pg, segs)
    assert segs and all(len(s["sha256"]) == 64 for s in segs)
    assert [s["name"] for s in segs] == sorted(s["name"] for s in segs)
    assert all(parse_lsn(s["end_lsn"]) - parse_lsn(s["start_lsn"]) == 1 << 20 for s in segs)
    commits = [s["last_commit"] for s in segs if s["last_commit"]]
    assert commits and before - 1 <= max(commits) <= state["until"]["time"]
    files = {r.path: r for r in ebm.catalog.files(incr.id)}
    assert all(files["wal/" + s["name"]].sha256.hex() == s["sha256"] for s in segs)
    assert all((pg.spool / s["name"]).exists() for s in segs)  # pruned by the next backup
    _backup(ebm)
    assert not any((pg.spool / s["name"]).exists() for s in segs)
    with monkeypatch.context() as m:  # refused from the catalog: no drive, no cartridge
        m.setattr(ebm.library, "claim_drive", lambda *_a: pytest.fail("a drive was claimed"))
        with pytest.raises(JobError, match="PostgreSQL chains are not consolidated"):
            consolidate(ebm, "pg")
    ebm.close()


def test_server_down_and_wrong_password_are_one_line_errors(tmp_path, pg, monkeypatch):
    ebm = _library(tmp_path)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg.port}:*:postgres:not-the-password\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    tcp = (f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres "
           f"ebm_wal_spool={pg.spool}")
    with pytest.raises(RequestError, match="password authentication failed"):
        _backup(ebm, tcp, dataset="pw")
    with pytest.raises(RequestError, match="do not put a password in the source") as refused:
        _backup(ebm, tcp + " password=s3cret", dataset="pw")
    assert "s3cret" not in str(refused.value)
    pg.stop_server()
    with pytest.raises(RequestError, match="server is not running"):
        _backup(ebm, pg.source(), dataset="down")
    assert ebm.catalog.dataset("down") is None and ebm.catalog.dataset("pw") is None
    ebm.close()


def test_archiving_not_configured_is_refused(tmp_path):
    with PgCluster(archive=False) as pg:
        ebm = _library(tmp_path)
        with pytest.raises(RequestError, match="archive_mode is off"):
            _backup(ebm, pg.source())
        ebm.close()


def test_wal_gap_fails_the_backup_and_keeps_the_chain(tmp_path, pg):
    ebm = _library(tmp_path)
    pg.sql("CREATE TABLE t (i int PRIMARY KEY, s text)")
    _backup(ebm, pg.source())
    on_tape = {p.name for p in pg.spool.iterdir()}
    for i in (1, 2):
        _insert(pg, i)
        pg.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 20
    while len({p.name for p in pg.spool.iterdir()} - on_tape) < 2:
        assert time.monotonic() < deadline, "the switched segments were not archived"
        time.sleep(0.05)
    missing = min({p.name for p in pg.spool.iterdir()} - on_tape)
    (pg.spool / missing).unlink()
    with pytest.raises(JobError, match=f"WAL gap: segment {missing} is missing"):
        _backup(ebm)
    assert [b.state for b in ebm.catalog.backups("pg")] == ["done", "failed"]
    ebm.close()


def test_restore_target_outside_the_chain_is_refused_untouched(tmp_path, pg):
    ebm = _library(tmp_path)
    pg.sql("CREATE TABLE t (i int PRIMARY KEY, s text)")
    before = time.time() - 60
    _backup(ebm, pg.source())
    _insert(pg, 1)
    _backup(ebm)
    target = tmp_path / "never"
    with pytest.raises(RestoreError, match="before the earliest consistent point"):
        _restore(ebm, "pg", target, when=before)
    with pytest.raises(RestoreError, match="before the earliest consistent point"):
        _restore(ebm, "pg", target, lsn="0/10")
    with pytest.raises(RestoreError, match="bad LSN"):
        _restore(ebm, "pg", target, lsn="nonsense")
    with pytest.raises(RestoreError, match="has a logical export|no logical export"):
        _restore(ebm, "pg", target, form="csv")
    ebm.close()
    r = run_cli(tmp_path / "lib", "restore", f"pg@{time.time() + 3600}", "--to", str(target))
    assert r.returncode == 1
    assert "after the last WAL on tape" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not target.exists()


def _states(*incrementals: list[tuple[int, float | None]]) -> list[dict]:
    """A base (consistent at t=100, WAL up to segment 7) and incrementals given as their
    (segment number, last commit time) lists, each reaching 100 s further."""
    base = {"start_lsn": "0/700028", "stop_lsn": "0/700100", "consistent_time": 100.0,
            "timeline": 1}
    common = {"segment_size": 1 << 20, "logical": False, "base": base}
    states = [{**common, "kind": "base", "until": {"time": 100.0, "lsn": "0/700100"},
               "wal_end": "000000010000000000000007", "segments": []}]
    for i, segs in enumerate(incrementals, 1):
        names = [(f"0000000100000000{n:08X}", t) for n, t in segs]
        states.append({**common, "kind": "wal",
                       "until": {"time": 100.0 + 100 * i, "lsn": f"0/{(segs[-1][0] + 1):X}00000"},
                       "wal_end": names[-1][0], "commit_times_complete": True,
                       "segments": [{"name": n, "last_commit": t} for n, t in names]})
    return states


def test_choose_point_picks_the_chain_and_drops_a_target_no_commit_passes():
    t = load_translator("postgresql")
    history = _states([(8, 150.0), (9, 190.0)], [(10, 250.0)])
    assert t.choose_point(history, 170.0, None, "physical") == (
        1, {"form": "physical", "target_time": 170.0})
    assert t.choose_point(history, 195.0, None, "physical") == (1, {"form": "physical"})
    assert t.choose_point(history, 240.0, None, "physical") == (
        2, {"form": "physical", "target_time": 240.0})
    assert t.choose_point(history, None, "0/950000", "physical") == (
        1, {"form": "physical", "target_lsn": "0/950000"})
    assert t.choose_point(history, None, None, "physical") == (2, {"form": "physical"})


def test_choose_point_refuses_a_wal_gap_in_the_chain():
    t = load_translator("postgresql")
    with pytest.raises(TranslatorError, match="WAL gap in the chain: segment 000000010000000000000008"):
        t.choose_point(_states([(9, 150.0)]), 140.0, None, "physical")
    with pytest.raises(TranslatorError, match="WAL gap in the chain: segment 00000001000000000000000A"):
        t.choose_point(_states([(8, 150.0), (9, 160.0)], [(11, 250.0)]), None, None, "physical")
