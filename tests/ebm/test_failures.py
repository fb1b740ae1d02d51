"""What goes wrong: wrong key, corrupted cartridge bytes, missing cartridge, a backup killed
mid-stream. Each gives a clear error naming what is wrong, and nothing is restored silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ebm_helpers import REPO, barcodes, make_library, manifest, run_cli, write_tree

from ebm.catalog import Catalog
from ebm.controller import BackupRequest
from ebm.crypto import BlockAuthError, BlockCipher
from ebm.manager import Ebm, load_translator
from ebm.rebuild import rebuild
from ebm.restore import RestoreError, restore
from vtl import CATALOG_NAME
from vtl.library import Library


def _restore(ebm, b, target, patterns=None, secret=None):
    return restore(ebm.catalog, ebm.library, load_translator, b, target, patterns, secret)


def test_encrypted_round_trip_and_wrong_passphrase(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    marker = b"TOP-SECRET-PAYLOAD " * 2000
    write_tree(src, {"secret-name-XYZZY.txt": marker, "other.bin": os.urandom(300_000)})
    pf = tmp_path / "pass"
    pf.write_text("correct horse battery staple\n")
    b = ebm.backup(BackupRequest(dataset="enc", source=src, pool="pool", encrypt=True,
                                 passphrase_file=pf))
    assert b.encrypted
    # A stolen cartridge file reveals neither contents nor file names.
    raw = b"".join(p.read_bytes() for p in (tmp_path / "lib/cartridges").glob("*.vtape"))
    assert b"TOP-SECRET" not in raw and b"XYZZY" not in raw
    _restore(ebm, b, tmp_path / "r", secret=b"correct horse battery staple")
    assert manifest(tmp_path / "r") == manifest(src)
    with pytest.raises(RestoreError, match="wrong passphrase or key"):
        _restore(ebm, b, tmp_path / "r2", secret=b"wrong")
    with pytest.raises(RestoreError, match="encrypted"):
        _restore(ebm, b, tmp_path / "r3")
    assert not (tmp_path / "r2/other.bin").exists()
    # the same through the CLI: one line, non-zero exit
    bad = tmp_path / "bad"
    bad.write_text("nope")
    r = run_cli(tmp_path / "lib", "restore", "enc", "--to", str(tmp_path / "r4"),
                "--passphrase-file", str(bad))
    assert r.returncode == 1 and r.stderr.startswith("error: wrong passphrase or key")
    assert len(r.stderr.strip().splitlines()) == 1
    ebm.close()


def test_tampered_encrypted_block_is_named() -> None:
    c = BlockCipher.new(b"k", "uuid-1")
    sealed = bytearray(c.seal(7, os.urandom(1000)))
    sealed[50] ^= 1
    with pytest.raises(BlockAuthError, match="cartridge A00001L8 file 1 block 7 is corrupt or the key is wrong"):
        c.open_block(7, bytes(sealed), "cartridge A00001L8 file 1 block 7")
    with pytest.raises(BlockAuthError):  # a block moved to another position fails too
        c.open_block(8, c.seal(7, b"x" * 100), "block 8")


def _corrupt(path: Path, frac: float) -> None:
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(int(size * frac))
        b = f.read(16)
        f.seek(int(size * frac))
        f.write(bytes(x ^ 0xFF for x in b))


def test_corrupted_cartridge_bytes_are_detected_and_named(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {f"f{i}": os.urandom(200_000) for i in range(20)})
    b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    bc = ebm.catalog.volumes(b.id)[0].barcode
    _corrupt(tmp_path / "lib/cartridges" / f"{bc}.vtape", 0.5)
    with pytest.raises(RestoreError, match=rf"cartridge {bc} file 1 block \d+ is corrupt"):
        _restore(ebm, b, tmp_path / "r")
    from ebm.verify import verify_backup

    vr = verify_backup(ebm.catalog, ebm.library, b)
    assert not vr.ok and any(bc in p and "corrupt" in p for p in vr.problems)
    r = run_cli(tmp_path / "lib", "verify", "ds")
    assert r.returncode == 1 and "corrupt" in r.stderr and "Traceback" not in r.stderr
    ebm.close()


def test_missing_cartridge_is_a_clear_error(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": b"hello"})
    b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    bc = ebm.catalog.volumes(b.id)[0].barcode
    (tmp_path / "lib/cartridges" / f"{bc}.vtape").rename(tmp_path / "gone.vtape")
    with pytest.raises(RestoreError, match=f"cartridge {bc}"):
        _restore(ebm, b, tmp_path / "r")
    ebm.close()
    r = run_cli(tmp_path / "lib", "restore", "ds", "--to", str(tmp_path / "r2"))
    assert r.returncode == 1 and bc in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _copy_catalog(root: Path, dst: Path) -> Path:
    """A copy of the catalog without EBM backups, for a rebuild that does not touch the real one."""
    import shutil

    shutil.copy(root / CATALOG_NAME, dst)
    c = Catalog(dst)
    c.db.execute("DELETE FROM ebm_backups")
    c.db.execute("DELETE FROM ebm_backup_volumes")
    c.close()
    return dst


def test_backup_killed_mid_stream(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    ebm = make_library(root, barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {"base": b"baseline data"})
    good = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    good_end = ebm.catalog.media(ebm.catalog.volumes(good.id)[0].barcode)["append_at"]
    ebm.close()
    write_tree(src, {f"big{i:02d}": os.urandom(1 << 20) for i in range(40)})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ebm", "--root", str(root), "backup", "ds"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cart = root / "cartridges" / "E00001L8.vtape"
    base = cart.stat().st_size
    deadline = time.monotonic() + 60
    while cart.stat().st_size < base + (6 << 20):
        assert proc.poll() is None, "backup finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    cat = Catalog.for_root(root)
    assert [b.state for b in cat.backups("ds")] == ["done", "running"]
    cat.close()
    torn = rebuild(Catalog(_copy_catalog(root, tmp_path / "torn.sqlite")), Library.open(root),
                   barcodes=["E00001L8"])
    assert len(torn.backups) == 1 and any("no trailer" in s for s in torn.skipped)
    ebm = Ebm(root)  # the next process reaps the dead job and cuts its torn tail off
    states = [(b.state, b.error) for b in ebm.catalog.backups("ds")]
    assert states[0][0] == "done" and states[1][0] == "failed" and "died" in states[1][1]
    with ebm.library.open_readonly("E00001L8") as c:
        assert c.eod == good_end  # nothing after the last good backup any more
    res = rebuild(Catalog(_copy_catalog(root, tmp_path / "fresh.sqlite")), ebm.library,
                  barcodes=["E00001L8"])
    assert len(res.backups) == 1 and not res.skipped
    # restore of the good backup is unaffected, and the next backup succeeds
    _restore(ebm, good, tmp_path / "r0")
    assert (tmp_path / "r0/base").read_bytes() == b"baseline data"
    nxt = ebm.backup(BackupRequest(dataset="ds"))
    assert nxt.state == "done" and nxt.parent == good.id
    v0 = ebm.catalog.volumes(nxt.id)[0]
    assert v0.barcode == "E00001L8" and v0.first_object == good_end  # overwrote the torn tail
    _restore(ebm, nxt, tmp_path / "r1")
    assert manifest(tmp_path / "r1") == manifest(src)
    ebm.close()


def test_key_file_round_trip(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": os.urandom(10_000)})
    kf = tmp_path / "key"
    kf.write_bytes(os.urandom(32))
    b = ebm.backup(BackupRequest(dataset="k", source=src, pool="pool", encrypt=True, key_file=kf))
    _restore(ebm, b, tmp_path / "r", secret=kf.read_bytes())
    assert manifest(tmp_path / "r") == manifest(src)
    r = run_cli(tmp_path / "lib", "verify", "k", "--key-file", str(kf))
    assert r.returncode == 0, r.stderr
    ebm.close()


def test_rebuild_of_encrypted_backups_needs_the_key(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": b"secret"})
    pf = tmp_path / "pass"
    pf.write_text("pw")
    ebm.backup(BackupRequest(dataset="e", source=src, pool="pool", encrypt=True, passphrase_file=pf))
    for t in ("ebm_backups", "ebm_backup_volumes", "ebm_files", "ebm_states"):
        ebm.catalog.db.execute(f"DELETE FROM {t}")
    rebuild(ebm.catalog, ebm.library)  # without the key: identity and extents only
    b = ebm.catalog.backups("e")[0]
    assert b.options.get("index_missing")
    with pytest.raises(RestoreError, match="no file index"):
        _restore(ebm, b, tmp_path / "r", secret=b"pw")
    res = rebuild(ebm.catalog, ebm.library, secret=b"pw")  # with it: the full index
    assert len(res.backups) == 1
    b = ebm.catalog.backups("e")[0]
    _restore(ebm, b, tmp_path / "r", secret=b"pw")
    assert (tmp_path / "r/a").read_bytes() == b"secret"
    ebm.close()


def test_a_library_gone_under_the_ebm_is_a_refusal(tmp_path: Path) -> None:
    """A root whose library.toml is gone holds no library: refused (exit 2), as `vtl` says."""
    from vtl.cli.errors import EXIT_USAGE, exit_code_for
    from vtl.config import CONFIG_NAME
    from vtl.errors import NoLibrary

    root = tmp_path / "lib"
    make_library(root, barcodes(1)).close()
    (root / CONFIG_NAME).unlink()
    ebm = Ebm(root, readonly=True)
    with pytest.raises(NoLibrary, match="no library at") as exc:
        ebm.library  # noqa: B018
    assert exit_code_for(exc.value) == EXIT_USAGE
    ebm.close()
