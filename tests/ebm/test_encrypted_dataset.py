"""Encryption belongs to the dataset: once a dataset was backed up encrypted, every later backup
(manual or scheduled) is encrypted under the same key, and one without the key (or with a
wrong one) is refused in one line before anything is written."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ebm_helpers import barcodes, make_library, run_cli, write_tree

from ebm.catalog import Catalog
from vtl import CATALOG_NAME


def _cartridge_files(root: Path) -> dict[Path, bytes]:
    """Every file of the library but its catalog: where tape data lies on disk."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(CATALOG_NAME)}


def _sizes(root: Path) -> dict[Path, int]:
    return {p: len(b) for p, b in _cartridge_files(root).items()}


def _encrypted_dataset(tmp_path: Path) -> tuple[Path, Path, Path, list[bytes]]:
    """A library with dataset ``home`` backed up once with --encrypt; the source's files hold
    markers (random, so no compression could hide them) that must never reach the cartridges."""
    root = tmp_path / "lib"
    make_library(root, barcodes(2)).close()
    src = tmp_path / "home"
    markers = [b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode() for _ in range(2)]
    write_tree(src, {"a.txt": markers[0] * 50})
    pf = tmp_path / "pass"
    pf.write_text("correct horse\n")
    r = run_cli(root, "backup", "home", "--source", str(src), "--pool", "pool", "--encrypt",
                "--passphrase-file", str(pf), "--no-compress")
    assert r.returncode == 0, r.stderr
    write_tree(src, {"b.txt": markers[1] * 50})  # what the next (incremental) backup carries
    return root, src, pf, markers


def _refused(r, root: Path, before: dict[Path, int], what: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0], r.stderr
    assert _sizes(root) == before  # nothing written, not even a header


def test_backup_of_an_encrypted_dataset_without_its_key_is_refused(tmp_path: Path) -> None:
    root, _src, pf, markers = _encrypted_dataset(tmp_path)
    before = _sizes(root)
    _refused(run_cli(root, "backup", "home", "--no-compress"), root, before,
             "dataset home is encrypted")
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    _refused(run_cli(root, "backup", "home", "--passphrase-file", str(wrong)), root, before,
             "wrong passphrase or key for dataset home")
    r = run_cli(root, "--json", "backup", "home", "--passphrase-file", str(pf), "--no-compress")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["level"] == "incr" and b["encrypted"]
    assert _sizes(root) != before
    for data in _cartridge_files(root).values():
        for m in markers:
            assert m not in data
    cat = Catalog.for_root(root)
    assert all(x.encrypted for x in cat.backups("home"))
    cat.close()
    r = run_cli(root, "--json", "dataset", "list")
    assert [(d["name"], d["encrypted"]) for d in json.loads(r.stdout)] == [("home", True)]


def test_scheduled_backup_of_an_encrypted_dataset_needs_its_key(tmp_path: Path) -> None:
    root, _src, pf, markers = _encrypted_dataset(tmp_path)
    before = _sizes(root)
    _refused(run_cli(root, "schedule", "add", "home", "daily at 03:00"), root, before,
             "dataset home is encrypted")
    cat = Catalog.for_root(root)  # a schedule from before the dataset remembered its key
    cat.add_schedule("home", "daily at 03:00", {}, time.time() - 1)
    cat.close()
    r = run_cli(root, "scheduler", "--once", timeout=300)
    assert r.returncode == 0, r.stderr
    assert _sizes(root) == before
    cat = Catalog.for_root(root)
    assert "dataset home is encrypted" in cat.schedules()[0]["last_result"]
    assert len(cat.backups("home")) == 1
    cat.remove_schedule(1)
    cat.close()
    r = run_cli(root, "schedule", "add", "home", "daily at 03:00", "--passphrase-file", str(pf))
    assert r.returncode == 0, r.stderr
    cat = Catalog.for_root(root)
    cat.db.execute("UPDATE ebm_schedules SET next_run=?", (time.time() - 1,))
    cat.close()
    r = run_cli(root, "scheduler", "--once", timeout=300)
    assert r.returncode == 0, r.stderr
    cat = Catalog.for_root(root)
    done = cat.backups("home", states=["done"])
    assert [(x.level, x.encrypted) for x in done] == [("full", True), ("incr", True)]
    cat.close()
    for data in _cartridge_files(root).values():
        for m in markers:
            assert m not in data
