"""What ``vtl lio export`` would create, decided without a kernel (configfs is tested in
tests/e2e under qemu): names, LUN order, dev_config strings, access, refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vtl.cli.main import app
from vtl.config import LibraryConfig
from vtl.library import Library
from vtl.lio.export import ExportError, plan
from vtl.lio.uio import parse_name


@pytest.fixture
def library(tmp_path):
    lib = Library.create(tmp_path / "lib", LibraryConfig(name="lab", drives=3, slots=4,
                                                         mailslots=1))
    yield lib
    lib.close()


def test_changer_lun_0_then_drives_in_element_order(library):
    p = plan(library)
    assert [(b.name, b.role, b.lun) for b in p.backstores] == [
        ("lab-changer", "changer", 0), ("lab-drive0", "drive0", 1),
        ("lab-drive1", "drive1", 2), ("lab-drive2", "drive2", 3)]
    assert p.iqn == library.config.iscsi.target_iqn
    assert p.portal == ("127.0.0.1", 3260)
    assert "nl_reply_supported=-1" in p.control
    assert p.cmd_time_out > 30


def test_the_handler_finds_what_the_export_names(library):
    for b in plan(library).backstores:
        dev = parse_name("uio0", f"tcm-user/1/{b.name}/{b.config}", 4096)
        assert dev is not None and (dev.role, dev.root) == (b.role, str(library.root))


def test_loopback_has_a_fixed_naa_name_and_no_iscsi_access(library):
    p = plan(library, "loopback", chap=("user", "secret123456"))
    assert p.loopback_wwn == plan(library, "loopback").loopback_wwn
    assert p.loopback_wwn.startswith("naa.") and len(p.loopback_wwn) == 20
    assert p.iqn == "" and p.chap is None and p.portal is None


def test_refusals(library):
    with pytest.raises(ExportError, match="unknown fabric"):
        plan(library, "fc")
    with pytest.raises(ExportError, match="mutual CHAP needs CHAP"):
        plan(library, mutual_chap=("m", "secret123456"))


def test_cli_errors_are_one_line(library, monkeypatch):
    import vtl.lio.export as export

    monkeypatch.setattr(export, "_root", lambda rtslib: (_ for _ in ()).throw(
        ExportError("no configfs: this kernel has no LIO target (load target_core_mod)")))
    runner = CliRunner()
    r = runner.invoke(app, ["--root", str(library.root), "lio", "status"])
    assert r.exit_code == 1 and r.stderr == (
        "error: no configfs: this kernel has no LIO target (load target_core_mod)\n")
    r = runner.invoke(app, ["--root", str(library.root), "lio", "export", "--fabric", "fc"])
    assert r.exit_code == 2 and "unknown fabric" in r.stderr
