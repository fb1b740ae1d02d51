"""Helpers for the EBM tests: a library with a pool of small cartridges, tree builders, the CLI.

The manifest comparison is the filesystem translator's own ``tree_manifest`` (kind, mode,
owner, mtime ns, content sha256, sparse map, link target, xattrs, hard-link groups), so
"restores identical" means the same thing across the translator's and the EBM's tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ebm.catalog import Catalog
from ebm.manager import Ebm
from translators.filesystem import tree_manifest
from vtl.config import LibraryConfig
from vtl.library import Library

REPO = Path(__file__).resolve().parents[2]

# The EBM's own pool tables as catalogs from before one pool notion have them (migrated by a
# writer, read through stand-ins by a read-only opener).
OLD_POOL_TABLES = """
    CREATE TABLE ebm_pools (name TEXT PRIMARY KEY, created REAL NOT NULL);
    CREATE TABLE ebm_pool_media (barcode TEXT PRIMARY KEY, pool TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'scratch', append_at INTEGER NOT NULL DEFAULT 0,
        busy INTEGER, recycled INTEGER NOT NULL DEFAULT 0);
"""


def make_library(root: Path, barcodes: list[str], capacity: int = 64 << 20,
                 pool: str = "pool", drives: int = 2) -> Ebm:
    """A fresh library whose cartridges all belong to EBM pool ``pool``."""
    lib = Library.create(root, LibraryConfig(drives=drives, slots=max(8, len(barcodes) + 2),
                                             mailslots=2))
    lib.create_cartridges(barcodes, capacity=capacity)
    lib.close()
    cat = Catalog.for_root(root)
    cat.create_pool(pool)
    for bc in barcodes:
        cat.add_to_pool(pool, bc)
    cat.close()
    return Ebm(root)


def barcodes(n: int, prefix: str = "E") -> list[str]:
    return [f"{prefix}{i:05d}L8" for i in range(1, n + 1)]


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def manifest(root: Path) -> dict[str, tuple]:
    """The tree's manifest without the root's own entry's mtime (the restore target dir is
    created by the test, its mtime is set from the archive but the comparison of '.' is
    still meaningful for mode/owner)."""
    return tree_manifest(root)


def run_cli(root: Path, *args: str, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real ``ebm`` CLI in a child process (what an admin runs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ebm", "--root", str(root), *args],
                          capture_output=True, text=True, input=input, timeout=timeout,
                          env=env, cwd=str(REPO))
