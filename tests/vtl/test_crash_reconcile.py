"""After `vtl serve` is SIGKILLed mid-write, the catalog is reconciled with the tape
(issue 10, item 5): at the next writer's open, at `vtl serve` start and at load, with no
command a human has to run; a clean stop leaves nothing to reconcile."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from iscsi_support import RawInitiator, pattern, scsi_status, sense_of
from served_library import start
from typer.testing import CliRunner

from vtl.cli.main import app
from vtl.config import IscsiConfig, LibraryConfig
from vtl.library import Library

runner = CliRunner()

IQN = "iqn.2026-11.org.vtl-ebm:crashtest"
BLOCK = 65536


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    config = LibraryConfig(drives=1, slots=4, mailslots=1, iscsi=IscsiConfig(target_iqn=IQN))
    with Library.create(root, config) as lib:
        lib.create_cartridge("K00001L8", capacity=64 << 20)
    return root


def verify(root: Path) -> int:
    """``vtl cartridge verify K00001L8`` (in-process): its exit code."""
    return runner.invoke(app, ["--root", str(root), "cartridge", "verify", "K00001L8"]).exit_code


def _until_good(ini: RawInitiator, lun: int) -> None:
    for _ in range(20):
        rsp, _ = ini.collect(ini.scsi(bytes(6), lun=lun))  # TEST UNIT READY
        if scsi_status(rsp) == 0:
            return
        assert sense_of(rsp)[2] & 0xF in (2, 6), sense_of(rsp).hex()
    raise AssertionError("device never became ready")


def _write(ini: RawInitiator, blocks: int, filemark: bool) -> None:
    for _ in range(blocks):
        rsp = ini.write(bytes([0x0A, 0]) + BLOCK.to_bytes(3, "big") + b"\0", pattern(BLOCK),
                        lun=1)
        assert scsi_status(rsp) == 0, sense_of(rsp).hex()
    if filemark:
        rsp, _ = ini.collect(ini.scsi(bytes([0x10, 0, 0, 0, 1, 0]), lun=1))  # WRITE FILEMARKS
        assert scsi_status(rsp) == 0


def _serve_and_write(root: Path, *, kill: bool) -> None:
    """Load K00001L8 into drive 0 through the changer, write 20 blocks, a filemark and 5 more
    blocks, then SIGKILL the server (or stop it cleanly)."""
    s = start(root)
    ini = RawInitiator(s.port, timeout=20)
    ini.login({"MaxRecvDataSegmentLength": "262144"}, target=IQN)
    _until_good(ini, 0)
    rsp, _ = ini.collect(ini.scsi(bytes([0xA5, 0, 0, 1, 0x04, 0, 0x01, 0, 0, 0, 0, 0]), lun=0))
    assert scsi_status(rsp) == 0, sense_of(rsp).hex()  # MOVE MEDIUM slot 1 -> drive 0
    _until_good(ini, 1)
    _write(ini, 20, filemark=True)
    _write(ini, 5, filemark=True)
    if kill:
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(10)
    else:
        ini.logout()
        assert s.stop() == 0
    ini.close()


def _row(root: Path) -> dict:
    """What a read-only ``vtl cartridge list`` shows for K00001L8."""
    lib = Library.open(root, readonly=True)
    try:
        row = lib.cartridge("K00001L8")
        return {**row, "location": lib.element_name(row["address"])}
    finally:
        lib.close()


def test_sigkill_then_verify_needs_nobody(root: Path) -> None:
    _serve_and_write(root, kill=True)
    assert _row(root)["open_since"] is not None  # read-only commands change nothing
    listing = runner.invoke(app, ["--root", str(root), "cartridge", "list"])
    assert "STALE" in listing.stdout  # and say the counts wait for a recount
    assert verify(root) == 0  # the writer's open reconciled first
    row = _row(root)
    assert (row["blocks"], row["files"], row["state"]) == (27, 2, "append")
    assert row["open_since"] is None and row["location"] == "drive:0"


def test_sigkill_then_serve_start_and_clean_stop(root: Path) -> None:
    _serve_and_write(root, kill=True)
    with (root / "cartridges" / "K00001L8.vtape").open("ab") as f:
        f.write(b"\x5a" * 3000)  # a torn record, as a kill inside a write leaves
    s = start(root)  # reconciles at start: the torn tail is cut, the counts stored
    row = _row(root)
    assert (row["blocks"], row["state"], row["open_since"]) == (27, "append", None)
    assert s.stop() == 0
    assert _row(root)["state"] == "append"
    assert verify(root) == 0


def test_clean_stop_leaves_nothing_to_reconcile(root: Path) -> None:
    _serve_and_write(root, kill=False)
    row = _row(root)
    assert (row["blocks"], row["state"], row["open_since"]) == (27, "append", None)
    assert verify(root) == 0


def test_load_counts_a_cartridge_a_crash_left_open(root: Path) -> None:
    _serve_and_write(root, kill=True)
    lib = Library.open(root, readonly=True)  # a reader reconciles nothing
    assert lib.catalog.cartridge("K00001L8")["blocks"] == 0
    lib.close()
    lib = Library(root, Library.open(root, readonly=True).config,
                  _writer_catalog(root))  # a writer without the open-time reconcile
    try:
        lib.drives[0].mount()  # a load/mount of it counts it afresh
        assert lib.catalog.cartridge("K00001L8")["blocks"] == 27
    finally:
        lib.close()
    assert _row(root)["open_since"] is None


def _writer_catalog(root: Path):
    from vtl.catalog import MediaCatalog

    return MediaCatalog(root / "catalog.sqlite")


def test_no_catalog_swap_while_serving(root: Path) -> None:
    """Restore and rebuild set the catalog file aside: never under a running server."""
    s = start(root)
    try:
        for args in (["rebuild", "--force"], ["restore"]):
            r = runner.invoke(app, ["--root", str(root), "catalog", *args])
            assert r.exit_code == 2 and "already serving" in r.stderr, r.output
        assert not list(root.glob("catalog.sqlite.damaged-*"))
    finally:
        assert s.stop() == 0


def test_verify_while_another_process_writes(root: Path) -> None:
    """The record a drive is writing looks torn to a reader: not damage, no 'error' state
    left behind for a clean stop to keep."""
    lib = Library.open(root)
    try:
        lib.load("K00001L8", 0)
        lib.drives[0].mount()  # the cartridge's lock is held, as a serving drive holds it
        with (root / "cartridges" / "K00001L8.vtape").open("ab") as f:
            f.write(b"\x5a" * 3000)  # half a record, still being written
        r = runner.invoke(app, ["--root", str(root), "--json", "cartridge", "verify",
                                "K00001L8"])
        assert r.exit_code == 0, r.output
        assert "being written" in r.stdout
        assert lib.catalog.cartridge("K00001L8")["state"] == "scratch"
    finally:
        lib.close()
