"""Linux names are bytes: names that are not UTF-8 back up, list (escaped), index and restore
byte-exact through a baseline and an incremental, and GNU tar extracts the same bytes from the
data tape file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ebm_helpers import barcodes, make_library, manifest, run_cli

from ebm.catalog import Catalog
from ebm.rebuild import rebuild
from tape_formats.cartridge import RecordKind, TapeCartridge
from vtl import CATALOG_NAME
from vtl.library import Library

CAFE = b"caf\xe9"  # Latin-1 "café"
RAW = b"\xff\xfe"
DIR = b"dir\xe9\xff"


def _tree(src: Path) -> None:
    s = os.fsencode(src)
    os.makedirs(s + b"/" + DIR + b"/sub")
    for rel, data in ((CAFE, b"latin-1 name"), (RAW, b"two bad bytes"),
                      (DIR + b"/a.txt", b"in a bad dir"), (DIR + b"/\xfe\xfd", b"bad in bad"),
                      (DIR + b"/sub/deep", b"deeper"), (b"plain.txt", b"plain")):
        with open(s + b"/" + rel, "wb") as f:
            f.write(data)
    os.symlink(RAW + b"/not-utf8-target", s + b"/ln")  # a dangling link, target not UTF-8
    os.symlink(CAFE, s + b"/" + DIR + b"/ln-" + CAFE)


def _data_stream(root: Path, catalog: Catalog, backup_id: int) -> bytes:
    """The data tape file as `mt fsf 1; dd | tar` would read it."""
    stream = bytearray()
    for v in catalog.volumes(backup_id):
        cart = TapeCartridge.open(root / "cartridges" / f"{v.barcode}.vtape", readonly=True)
        cart.locate(v.first_object)
        cart.space_filemarks(1)
        while (r := cart.read_block()).kind == RecordKind.DATA:
            stream += r.data
        cart.close()
    return bytes(stream)


def test_names_that_are_not_utf8_round_trip_byte_exact(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    make_library(root, barcodes(2)).close()
    src = tmp_path / "src"
    _tree(src)
    s = os.fsencode(src)
    r = run_cli(root, "--json", "backup", "home", "--source", str(src), "--pool", "pool")
    assert r.returncode == 0, r.stderr
    full = json.loads(r.stdout)
    # GNU tar extracts the baseline's pax stream to the same byte names
    cat = Catalog.for_root(root)
    stream = _data_stream(root, cat, full["id"])
    assert b"hdrcharset=BINARY" in stream
    out = tmp_path / "tar-out"
    out.mkdir()
    tar = subprocess.run(["tar", "--warning=no-unknown-keyword", "-xf", "-", "-C", str(out)],
                         input=stream, capture_output=True)
    assert tar.returncode == 0 and tar.stderr == b"", tar.stderr
    assert set(manifest(out)) == set(manifest(src))  # the same byte names
    with open(os.fsencode(out) + b"/" + DIR + b"/\xfe\xfd", "rb") as f:
        assert f.read() == b"bad in bad"
    assert os.readlink(os.fsencode(out) + b"/ln") == RAW + b"/not-utf8-target"

    # incremental: change a file in the bad directory, add one, delete one
    with open(s + b"/" + DIR + b"/a.txt", "wb") as f:
        f.write(b"changed in a bad dir")
    with open(s + b"/new\x80", "wb") as f:
        f.write(b"new bad name")
    os.unlink(s + b"/" + RAW)
    r = run_cli(root, "--json", "backup", "home")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["level"] == "incr"

    # the per-file index keeps the bytes (BLOB rows), the listing shows them escaped
    paths = {os.fsencode(p) for p in cat.positions(full["id"])}
    assert {CAFE, RAW, DIR + b"/\xfe\xfd", b"ln"} <= paths
    cat.close()
    r = run_cli(root, "ls", "home")
    assert r.returncode == 0, r.stderr
    listed = [line.split(maxsplit=5)[-1] for line in r.stdout.splitlines()]
    assert "caf\\xe9" in listed and "new\\x80" in listed and "dir\\xe9\\xff/\\xfe\\xfd" in listed
    assert "\\xff\\xfe" not in listed  # deleted by the incremental
    r = run_cli(root, "--json", "ls", "home")
    assert r.returncode == 0
    assert os.fsdecode(DIR + b"/\xfe\xfd") in {e["path"] for e in json.loads(r.stdout)}

    # whole restore of the chain and single-path restores by byte names
    to = tmp_path / "restored"
    r = run_cli(root, "restore", "home", "--to", str(to))
    assert r.returncode == 0, r.stderr
    assert manifest(to) == manifest(src)
    one = tmp_path / "one"
    r = run_cli(root, "restore", "home", "--to", str(one), "--path", os.fsdecode(DIR + b"/\xfe\xfd"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(os.fsencode(one))) == [DIR]
    assert os.listdir(os.fsencode(one) + b"/" + DIR) == [b"\xfe\xfd"]
    two = tmp_path / "two"
    r = run_cli(root, "restore", "home", "--to", str(two), "--path", os.fsdecode(DIR))
    assert r.returncode == 0, r.stderr
    with open(os.fsencode(two) + b"/" + DIR + b"/a.txt", "rb") as f:
        assert f.read() == b"changed in a bad dir"
    assert os.readlink(os.fsencode(two) + b"/" + DIR + b"/ln-" + CAFE) == CAFE
    with open(os.fsencode(two) + b"/" + DIR + b"/sub/deep", "rb") as f:
        assert f.read() == b"deeper"
    three = tmp_path / "three"  # the name as `ebm ls` shows it selects the same file
    r = run_cli(root, "restore", "home", "--to", str(three), "--path", "dir\\xe9\\xff/\\xfe\\xfd")
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.fsencode(three) + b"/" + DIR) == [b"\xfe\xfd"]
    r = run_cli(root, "ls", "home", "caf\\xe9")
    assert r.returncode == 0 and r.stdout.split()[-1] == "caf\\xe9", r.stdout

    # the catalog rebuilt from the cartridges (trailer index) keeps the same byte names
    copy = tmp_path / "rebuilt.sqlite"
    shutil.copy(root / CATALOG_NAME, copy)
    rebuilt = Catalog(copy)
    for t in ("ebm_backups", "ebm_backup_volumes", "ebm_files", "ebm_paths", "ebm_states"):
        rebuilt.db.execute(f"DELETE FROM {t}")
    lib = Library.open(root)
    res = rebuild(rebuilt, lib)
    lib.close()
    assert len(res.backups) == 2
    b = rebuilt.backup(full["uuid"])
    assert {CAFE, RAW, DIR + b"/\xfe\xfd"} <= {os.fsencode(r.path) for r in rebuilt.files(b.id)}
    assert [r.linkname for r in rebuilt.files(b.id) if r.path == "ln"] == [
        os.fsdecode(RAW + b"/not-utf8-target")]
    rebuilt.close()
