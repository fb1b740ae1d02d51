"""The EBM on the remote tape path: `ebm --library iscsi://...` against `vtl serve`.

The served library requires CHAP and answers mutual CHAP. Backup (full, spanning at early
warning, encrypted, incremental), single-file restore that LOCATEs to its block, verify,
catalog rebuild from the tapes, backups crossing between the iSCSI and in-process paths both
ways, the drive's persistent reservation against a second initiator, a SIGKILLed job's
reservation preempted, a TCP connection cut in the middle of a backup, and a damaged
record on the library host reported by a remote verify.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ebm_helpers import REPO, manifest, write_tree
from served_library import Served, start, vtl
from tcp_proxy import CuttableProxy

from ebm.manager import Ebm, load_translator
from ebm.rebuild import rebuild
from ebm.remote.ebm_host import RemoteSpec
from ebm.remote.initiator import Chap, Initiator
from ebm.remote.remote_library import RemoteError
from ebm.remote.scsi_client import ReservationConflict, ScsiDevice, TapeDevice
from ebm.restore import restore
from ebm.verify import verify_backup

IQN = "iqn.2026-11.org.vtl-ebm:remote-test"
_FIRST_BACKUP: dict[str, Path] = {}  # what the in-process restore test checks
# The served library wants CHAP and proves itself with mutual CHAP.
CHAP = Chap("ebm-host", "initiator-secret-1", "vtl-lib", "target-secret-22")
CHAP_FILE = Path("unset")  # `user:secret` lines for --chap-file; the fixture writes it


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """One served library for the module, CHAP and mutual CHAP required (each test uses its
    own cartridges); the last test stops it, to restore in-process."""
    global CHAP_FILE
    base = tmp_path_factory.mktemp("remote")
    CHAP_FILE = base / "chap"
    root = base / "lib"
    vtl(root, "init", "--drives", "2", "--slots", "40", "--iqn", IQN)
    vtl(root, "cartridge", "create", "R00001L8-R00030L8", "--capacity", "4MiB")
    CHAP_FILE.write_text(f"{CHAP.user}:{CHAP.secret}\n{CHAP.mutual_user}:{CHAP.mutual_secret}\n")
    CHAP_FILE.chmod(0o600)  # the EBM refuses a CHAP file others can read
    for name, secret in (("secret", CHAP.secret), ("mutual", CHAP.mutual_secret)):
        (base / name).write_text(f"{secret}\n")
        (base / name).chmod(0o600)  # vtl serve warns about a secret others can read
    s = start(root, *_chap_args(base))
    yield s
    s.stop()


def _chap_args(base: Path) -> list[str]:
    return ["--chap-user", CHAP.user, "--chap-secret-file", str(base / "secret"),
            "--mutual-chap-user", str(CHAP.mutual_user), "--mutual-chap-secret-file",
            str(base / "mutual")]


def remote_ebm(served: Served, catalog: Path, *args: str, port: int | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    url = f"iscsi://127.0.0.1:{port or served.port}/{IQN}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "ebm", "--library", url, "--catalog",
                        str(catalog), "--chap-file", str(CHAP_FILE), *args],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO))
    if check:
        assert r.returncode == 0, r.stderr
    return r


@contextlib.contextmanager
def remote_api(served: Served, catalog: Path, port: int | None = None) -> Iterator[Ebm]:
    """The EBM on the remote path in this process, as `ebm --library` opens it."""
    spec = RemoteSpec.from_options(f"iscsi://127.0.0.1:{port or served.port}/{IQN}",
                                   chap_file=CHAP_FILE)
    ebm = Ebm(catalog, remote=spec)
    try:
        yield ebm
    finally:
        ebm.close()


def make_pool(served: Served, catalog: Path, pool: str, *barcodes: str,
              port: int | None = None) -> None:
    """`ebm pool create` + `ebm pool add`, in this process (each CLI run costs a start-up)."""
    with remote_api(served, catalog, port) as ebm:
        ebm.catalog.create_pool(pool)
        ebm.library  # noqa: B018 - the changer's barcodes into the local catalog
        ebm.catalog.add_to_pool(pool, *barcodes)


def test_backup_restore_verify_rebuild_over_iscsi(served: Served, tmp_path: Path):
    src, cat = tmp_path / "src", tmp_path / "ebm-catalog"
    write_tree(src, {"big.bin": os.urandom(5 << 20),  # 5 MiB on 4 MiB cartridges: spans
                     "docs/notes.txt": b"remember the milk\n",
                     **{f"docs/f{i}.txt": os.urandom(3000) for i in range(20)}})
    pw = tmp_path / "pass"
    pw.write_text("correct horse\n")
    remote_ebm(served, cat, "pool", "create", "daily")  # the CLI once; in-process elsewhere
    remote_ebm(served, cat, "pool", "add", "daily", "R00001L8", "R00002L8", "R00003L8")
    r = remote_ebm(served, cat, "backup", "home", "--source", str(src), "--pool", "daily",
                   "--encrypt", "--passphrase-file", str(pw))
    assert "R00001L8, R00002L8" in r.stdout  # spanned at early warning
    assert oct((cat / "catalog.sqlite").stat().st_mode & 0o777) == "0o600"
    (src / "docs" / "new.txt").write_bytes(b"added later\n")
    # The catalog directory remembers its library (ebm-remote.toml): --catalog alone will do.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "ebm", "--catalog", str(cat), "backup", "home",
                        "--passphrase-file", str(pw)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=str(REPO))
    assert r.returncode == 0 and "(incr)" in r.stdout, r.stderr
    out = tmp_path / "one"
    r = remote_ebm(served, cat, "restore", "home", "--to", str(out), "--path", "docs/notes.txt",
                   "--passphrase-file", str(pw))
    # LOCATEd straight to the blocks of the file and of its directory in each backup of the
    # chain (the full alone spans 20+ blocks)
    assert int(re.search(r"(\d+) blocks read", r.stdout)[1]) <= 2, r.stdout
    assert (out / "docs" / "notes.txt").read_bytes() == b"remember the milk\n"
    full = tmp_path / "full"
    remote_ebm(served, cat, "restore", "home", "--to", str(full), "--passphrase-file", str(pw))
    assert manifest(full) == manifest(src)
    # verify, and the catalog again from the tapes alone on a host that lost it: through
    # the same code in this process (each CLI start-up costs seconds on a loaded machine)
    with remote_api(served, cat) as ebm:
        assert all(verify_backup(ebm.catalog, ebm.library, b, b"correct horse").ok
                   for b in ebm.catalog.backups("home"))
    with remote_api(served, tmp_path / "rebuilt") as ebm:
        rebuilt = rebuild(ebm.catalog, ebm.library, b"correct horse")
        assert len(rebuilt.backups) == 2, rebuilt.skipped
        latest = ebm.catalog.last_good("home")
        assert latest is not None and latest.level == "incr"
        restore(ebm.catalog, ebm.library, load_translator, latest, tmp_path / "again",
                secret=b"correct horse")
    assert manifest(tmp_path / "again") == manifest(src)
    _FIRST_BACKUP.update(src=src, passphrase=pw)


def test_claimed_drive_is_reserved_against_other_initiators(served: Served):
    spec = RemoteSpec.from_options(f"iscsi://127.0.0.1:{served.port}/{IQN}", chap_file=CHAP_FILE,
                                   initiator_name="iqn.2026-11.org.example:ebm-host")
    lib = spec.open_library()
    legacy = Initiator("127.0.0.1", served.port, IQN, chap_auth=CHAP,
                       initiator_name="iqn.2026-11.org.example:legacy").connect()
    try:
        bay = lib.claim_drive("test")
        lib.load("R00004L8", bay.index)
        bay.mount().write_block(b"ebm data")
        other = TapeDevice(legacy, bay.lun, "legacy's view")
        other.test_unit_ready()  # its new nexus's UNIT ATTENTION, as st's open takes it
        with pytest.raises(ReservationConflict, match="RESERVATION CONFLICT"):
            other.write(b"legacy data that must not interleave")
        assert lib.claim_drive("second job").index != bay.index  # the other drive
        elsewhere = RemoteSpec.from_options(
            f"iscsi://127.0.0.1:{served.port}/{IQN}", chap_file=CHAP_FILE,
            initiator_name="iqn.2026-11.org.example:other-host").open_library()
        try:  # another EBM host may not take the cartridge out of our reserved drive
            with pytest.raises(RemoteError, match="another initiator has reserved"):
                elsewhere.unload(bay.index)
        finally:
            elsewhere.close()
        lib.release_drive(bay.index)
        other.locate(1)
        other.write(b"after release: allowed")
    finally:
        legacy.close()
        lib.close()


def test_connection_cut_mid_backup_is_settled_by_read_position(served: Served, tmp_path: Path):
    src, cat = tmp_path / "src", tmp_path / "ebm-catalog"
    write_tree(src, {f"d/f{i}": os.urandom(256 << 10) for i in range(10)})  # 2.5 MiB
    proxy = CuttableProxy(served.port, cut_after=1 << 20)
    try:
        make_pool(served, cat, "p", "R00005L8", "R00006L8", port=proxy.port)
        r = remote_ebm(served, cat, "backup", "data", "--source", str(src), "--pool", "p",
                       port=proxy.port, check=False)
        assert proxy.cuts == 1
        if r.returncode == 0:
            assert "reconnected" in r.stderr  # the WRITE was settled by READ POSITION
        else:  # a clean, one-line failure; the next run then succeeds
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            r = remote_ebm(served, cat, "backup", "data", port=proxy.port)
        out = tmp_path / "out"
        remote_ebm(served, cat, "restore", "data", "--to", str(out), port=proxy.port)
        assert manifest(out) == manifest(src)
        remote_ebm(served, cat, "verify", "data", port=proxy.port)
    finally:
        proxy.close()
    # Damaged records on the library's disk: MEDIUM ERROR over SCSI, named by the mover.
    with sqlite3.connect(cat / "catalog.sqlite") as db:
        barcode = db.execute("SELECT v.barcode FROM ebm_backup_volumes v JOIN ebm_backups b "
                             "ON b.id = v.backup WHERE b.state = 'done'").fetchone()[0]
    tape = served.root / "cartridges" / f"{barcode}.vtape"
    with tape.open("r+b") as f:
        for offset in range(256 << 10, tape.stat().st_size, 128 << 10):
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    r = remote_ebm(served, cat, "verify", "data", check=False)
    said = r.stdout + r.stderr
    assert r.returncode == 1 and f"cartridge {barcode} file" in said and "corrupt" in said, said


def test_killed_backup_leaves_a_reservation_the_next_job_preempts(served: Served, tmp_path: Path):
    """SIGKILL mid-backup: the dead job's reservation stays on the target (it is persistent);
    the next EBM process on this host sees the holder's pid is gone, preempts it, marks the
    job failed and backs up again."""
    src, cat = tmp_path / "src", tmp_path / "ebm-catalog"
    write_tree(src, {f"d/f{i}": os.urandom(256 << 10) for i in range(12)})
    make_pool(served, cat, "k", "R00007L8", "R00008L8")
    url = f"iscsi://127.0.0.1:{served.port}/{IQN}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ebm", "--library", url, "--catalog", str(cat),
                             "--chap-file", str(CHAP_FILE),
                             "backup", "k", "--source", str(src), "--pool", "k"],
                            env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with sqlite3.connect(cat / "catalog.sqlite") as db:
            busy = db.execute("SELECT count(*) FROM ebm_media WHERE busy IS NOT NULL").fetchone()[0]
        if busy:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    watcher = Initiator("127.0.0.1", served.port, IQN, initiator_name="iqn.2026-11.org.example:w",
                        chap_auth=CHAP)
    with watcher:
        drives = [ScsiDevice(watcher, lun, f"LUN {lun}") for lun in (1, 2)]
        assert any(d.reservation() for d in drives)  # the dead job's, still there
        r = remote_ebm(served, cat, "backup", "k", "--source", str(src), "--pool", "k")
        assert "backup" in r.stdout
        assert not any(d.reservation() for d in drives)  # preempted, then released
    assert "failed" in remote_ebm(served, cat, "list", "--all").stdout  # the killed job
    out = tmp_path / "out"
    remote_ebm(served, cat, "restore", "k", "--to", str(out))
    assert manifest(out) == manifest(src)


def _pool(first: int, n: int) -> tuple[str, ...]:
    return tuple(f"R{i:05d}L8" for i in range(first, first + n))


# The EBM's own tests, unchanged, with the library they make swapped for the served one over
# iSCSI (4 MiB cartridges, so the larger trees span). Left out: the in-process kill test
# (it watches the library's cartridge file grow; the kill over iSCSI is tested above).
MATRIX = [
    ("test_roundtrip", "test_chain_of_incrementals_every_point_restores_identical", _pool(9, 2)),
    ("test_roundtrip", "test_path_and_glob_restores_follow_the_chain", _pool(11, 2)),
    ("test_roundtrip", "test_full_flag_forces_baseline_and_restore_by_dataset_at_time",
     _pool(13, 1)),
    ("test_roundtrip", "test_spanning_over_tiny_cartridges", _pool(14, 5)),
    ("test_roundtrip", "test_single_file_restore_reads_only_its_blocks", _pool(19, 4)),
    ("test_roundtrip", "test_path_restore_of_a_hard_link_brings_its_target", _pool(23, 1)),
    ("test_failures", "test_encrypted_round_trip_and_wrong_passphrase", _pool(24, 2)),
    ("test_failures", "test_corrupted_cartridge_bytes_are_detected_and_named", _pool(26, 2)),
    ("test_failures", "test_key_file_round_trip", _pool(28, 1)),
]


@pytest.mark.parametrize("module, name, pool", MATRIX, ids=[m[1][5:] for m in MATRIX])
def test_in_process_tests_run_over_iscsi(served: Served, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, module: str,
                                         name: str, pool: tuple[str, ...]):
    """The catalog directory the test makes remembers the served library (so the test's own
    `ebm --root DIR` CLI runs go over iSCSI too), and its ``cartridges`` is the served
    library's, so a test that reads or damages cartridge files finds them."""
    import importlib

    from ebm.remote import ebm_host

    mod = importlib.import_module(module)
    url = f"iscsi://127.0.0.1:{served.port}/{IQN}"

    def remote_library(root: Path, _barcodes: list[str], **_kw: object) -> Ebm:
        ebm_host.prepare_catalog_dir(root)
        ebm_host.save_remote_config(root, {"url": url, "chap_file": CHAP_FILE})
        (root / "cartridges").symlink_to(served.root / "cartridges")
        make_pool(served, root, "pool", *pool)
        return Ebm(root, remote=RemoteSpec.from_options(url, chap_file=CHAP_FILE))

    monkeypatch.setattr(mod, "make_library", remote_library)
    getattr(mod, name)(tmp_path)


def test_backups_cross_between_iscsi_and_in_process(served: Served, tmp_path: Path):
    """Last: stops the server; the library's own host restores what went over iSCSI, backs up
    in-process, and a remote host restores that over iSCSI."""
    if not _FIRST_BACKUP:
        pytest.skip("needs the first test's backup")
    src, pw = _FIRST_BACKUP["src"], _FIRST_BACKUP["passphrase"]
    served.stop()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ebm_local = [sys.executable, "-m", "ebm", "--root", str(served.root)]
    local_src = tmp_path / "local-src"
    write_tree(local_src, {"written/in-process.txt": b"on the library's host\n"})
    for args in (["catalog", "rebuild", "--passphrase-file", str(pw)],
                 ["restore", "home", "--to", str(tmp_path / "local"), "--passphrase-file", str(pw)],
                 ["backup", "here", "--source", str(local_src), "--pool", "daily"]):
        r = subprocess.run([*ebm_local, *args], capture_output=True, text=True, timeout=120,
                           env=env, cwd=str(REPO))
        assert r.returncode == 0, r.stderr
    assert manifest(tmp_path / "local") == manifest(src)
    again = start(served.root, *_chap_args(served.root.parent))
    try:
        with remote_api(again, tmp_path / "remote-catalog") as ebm:
            rebuild(ebm.catalog, ebm.library, b"correct horse")
            here = ebm.catalog.last_good("here")
            assert here is not None
            restore(ebm.catalog, ebm.library, load_translator, here, tmp_path / "remote")
        assert manifest(tmp_path / "remote") == manifest(local_src)
    finally:
        again.stop()


def test_chap_file_must_be_private_and_well_formed(tmp_path: Path):
    from ebm.remote.ebm_host import RemoteSetupError, read_chap_file

    f = tmp_path / "chap"
    f.write_text("ebm:initiator-secret-1\nvtl:target-secret-22\n")
    f.chmod(0o644)
    with pytest.raises(RemoteSetupError, match="chmod 600"):
        read_chap_file(f)
    f.chmod(0o600)
    c = read_chap_file(f)
    assert (c.user, c.secret, c.mutual_user, c.mutual_secret) == \
        ("ebm", "initiator-secret-1", "vtl", "target-secret-22")
    f.write_text("no colon here\n")
    with pytest.raises(RemoteSetupError, match="expected user:secret"):
        read_chap_file(f)
