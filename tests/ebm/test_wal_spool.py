"""The prefetch spool of `ebm wal-fetch` (ebm/wal_spool.py): what restore_command's light
entry hands over, and what it leaves to the tape path. No PostgreSQL needed; the tape side
is in tests/translators/test_postgresql.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ebm.wal_spool import WalSpool, absent, serve, spool_root

SEG = "000000010000000000000003"
UUID = "0f0e0d0c-0000-4000-8000-000000000001"


def _spooled(root: Path, name: str = SEG, body: bytes = b"wal") -> WalSpool:
    spool = WalSpool(str(root), UUID)
    assert spool.create()
    Path(spool.part(name)).write_bytes(body)
    spool.publish([name])
    return spool


def _args(spool: WalSpool | None, name: str, dest: Path) -> list[str]:
    where = ["--spool", spool.root] if spool else []
    return ["--root", "/lib", "wal-fetch", UUID, *where, name, str(dest)]


def test_a_spooled_segment_stays_until_a_later_one_is_handed_over(tmp_path):
    spool = _spooled(tmp_path / "spool")
    later = "000000010000000000000004"
    _spooled(tmp_path / "spool", later, b"later")
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    assert serve(_args(spool, SEG, dest))
    assert dest.read_bytes() == b"wal"
    dest.unlink()  # as PostgreSQL does before each restore_command
    assert serve(_args(spool, SEG, dest))  # asked again when recovery promotes
    assert serve(_args(spool, later, dest)) and dest.read_bytes() == b"later"
    assert os.listdir(spool.path) == [later]  # recovery is past SEG
    assert os.listdir(dest.parent) == ["RECOVERYXLOG"]


def test_the_default_spool_is_in_the_directory_of_the_destination(tmp_path):
    pg_wal = tmp_path / "pg_wal"
    dest = pg_wal / "RECOVERYXLOG"
    assert spool_root(str(dest)) == str(pg_wal / "ebm-prefetch")
    _spooled(pg_wal / "ebm-prefetch")
    assert serve(_args(None, SEG, dest)) and dest.read_bytes() == b"wal"


def test_other_chains_unfinished_parts_and_odd_names_are_never_served(tmp_path):
    spool = _spooled(tmp_path / "spool")
    Path(spool.part("000000010000000000000004")).write_bytes(b"half")
    dest = tmp_path / "dest"
    other = ["--root", "/lib", "wal-fetch", "another-uuid", "--spool", spool.root, SEG, str(dest)]
    assert not serve(other)
    for name in ("000000010000000000000004", f".{SEG}.part", f"../{UUID}/{SEG}", ""):
        assert not serve(_args(spool, name, dest))
    assert not serve(["--root", "/lib", "list"]) and not dest.exists()


def test_discard_removes_the_chain_spool_and_an_empty_root(tmp_path):
    spool = _spooled(tmp_path / "spool")
    Path(spool.part("000000010000000000000004")).write_bytes(b"half")
    spool.discard()
    assert not (tmp_path / "spool").exists()
    WalSpool(str(tmp_path / "never"), UUID).discard()  # nothing there: no error


def test_the_entry_serves_without_loading_the_cli(tmp_path):
    spool = _spooled(tmp_path / "spool")
    dest = tmp_path / "dest"
    code = ("import sys; from ebm.wal_spool import main\n"
            "try:\n    main(sys.argv[1:])\n"
            "finally:\n    assert 'ebm.cli' not in sys.modules and 'typer' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code, *_args(spool, SEG, dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == b"wal"


def test_the_entry_answers_not_in_the_chain_from_the_chain_list(tmp_path):
    spool = _spooled(tmp_path / "spool")
    dest = tmp_path / "dest"
    missing, later = "00000002.history", "000000010000000000000004"
    assert not absent(_args(spool, missing, dest))  # no pass has listed the chain yet
    spool.write_chain([SEG, later])
    assert absent(_args(spool, missing, dest)) and not absent(_args(spool, later, dest))
    code = ("import sys; from ebm.wal_spool import main\n"
            "try:\n    main(sys.argv[1:])\n"
            "finally:\n    assert 'ebm.cli' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code, *_args(spool, missing, dest)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert not dest.exists()
