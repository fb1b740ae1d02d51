"""The two skeleton layouts of a dedup cartridge: the dense one of new cartridges (the bytes
outside the payloads back to back, its durable length in each recipe batch) and the sparse
one of older libraries (the plain file's size and offsets, payloads as holes), which keeps
reading and appending; and the dense one's two crash states: skeleton bytes past the last
sync point, and a truncate (overwrite) whose recipe rewrite a SIGKILL prevented."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from cartridge_io import new_dedup_cartridge

from tape_formats.cartridge import RecordKind, TapeCartridge, verify_cartridge
from tape_formats.index import PositionIndex
from tape_formats.records import HEADER_SIZE, RECORD_HEADER_SIZE
from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.gc import collect
from tape_formats.store.medium import recipe_path

REPO = Path(__file__).resolve().parents[2]


def _blocks(seed: int, n: int, size: int = 10 << 10) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(n)]


def _new(tmp_path: Path, barcode: str, *, sparse: bool = False) -> Path:
    return new_dedup_cartridge(tmp_path / "cartridges", barcode, tmp_path / "store",
                               sparse=sparse)


def _write(path: Path, blocks: list[bytes], *, at: int | None = None) -> None:
    with TapeCartridge.open(path) as c:
        if at is None:
            c.space_to_eod()
        else:
            c.locate(at)
        for b in blocks:
            c.write_block(b)
        c.write_filemarks(1)


def _read_all(path: Path) -> list[bytes | None]:
    """Data blocks as bytes, filemarks as None, up to EOD."""
    out: list[bytes | None] = []
    with TapeCartridge.open(path, readonly=True) as c:
        while (r := c.read_block()).kind is not RecordKind.EOD:
            out.append(bytes(r.data) if r.kind is RecordKind.DATA else None)
    return out


def test_a_dense_skeleton_costs_a_record_header_per_record(tmp_path: Path) -> None:
    a = _new(tmp_path, "S00001L8")
    blocks = _blocks(1, 200)
    _write(a, blocks)
    _write(a, blocks[:5])
    assert a.stat().st_size == HEADER_SIZE + RECORD_HEADER_SIZE * 207
    assert recipes.load(recipe_path(a)).skeleton == a.stat().st_size
    assert _read_all(a) == [*blocks, None, *blocks[:5], None]
    _write(a, [b"short"], at=100)  # an overwrite cuts skeleton and recipe alike
    assert _read_all(a) == [*blocks[:100], b"short", None]
    assert a.stat().st_size == HEADER_SIZE + RECORD_HEADER_SIZE * 102
    assert verify_cartridge(a).ok


def test_an_older_sparse_skeleton_keeps_reading_and_appending(tmp_path: Path) -> None:
    old = _new(tmp_path, "S00001L8", sparse=True)
    blocks = _blocks(2, 40)
    _write(old, blocks[:30])
    _write(old, blocks[30:])
    _write(old, [b"again"], at=10)
    assert _read_all(old) == [*blocks[:10], b"again", None]
    with open(recipe_path(old), "rb") as f:
        assert f.read(8) == recipes.MAGIC  # still the sparse layout, after a rewrite too
    assert recipes.load(recipe_path(old)).skeleton is None
    # the plain file's size and offsets: headers in place, payloads as holes
    assert old.stat().st_size == HEADER_SIZE + 12 * RECORD_HEADER_SIZE + sum(
        map(len, blocks[:10])) + len(b"again")
    # both layouts side by side in one store, sharing chunks
    new = _new(tmp_path, "S00002L8")
    _write(new, blocks[:10])
    collect(ChunkStore(tmp_path / "store"), tmp_path / "cartridges")
    assert _read_all(old) == [*blocks[:10], b"again", None]
    assert _read_all(new) == [*blocks[:10], None]
    assert verify_cartridge(old).ok and verify_cartridge(new).ok


def test_skeleton_bytes_past_the_last_sync_point_are_cut(tmp_path: Path) -> None:
    a = _new(tmp_path, "S00001L8")
    blocks = _blocks(3, 12)
    _write(a, blocks[:6])
    durable = recipe_path(a).read_bytes()
    _write(a, blocks[6:])
    recipe_path(a).write_bytes(durable)  # a crash before the second recipe batch
    PositionIndex.sidecar(a).unlink()
    assert _read_all(a) == [*blocks[:6], None]  # a read-only open ignores them
    with TapeCartridge.open(a) as c:  # a read-write open cuts them for good
        assert c.eod == 7
    assert a.stat().st_size == HEADER_SIZE + 7 * RECORD_HEADER_SIZE


KILLED_IN_AN_OVERWRITE = r"""
import os, signal, sys
from pathlib import Path
from tape_formats.cartridge import TapeCartridge
c = TapeCartridge.open(Path(sys.argv[1]))
c.locate(3)
c.write_block(b"new" * 1000)  # skeleton cut and a header written; the recipe not rewritten
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_overwrite_killed_before_its_recipe_rewrite(tmp_path: Path) -> None:
    a = _new(tmp_path, "S00001L8")
    blocks = _blocks(4, 6)
    _write(a, blocks)
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_AN_OVERWRITE, str(a)],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
    assert proc.returncode == -9
    # the skeleton is shorter than the recipe says: it ends where the overwrite began
    assert a.stat().st_size < recipes.load(recipe_path(a)).skeleton
    assert _read_all(a)[:3] == blocks[:3]
    with TapeCartridge.open(a) as c:
        assert c.eod == 3  # the new record's payload never made it: a torn tail
    _write(a, blocks[3:])
    assert _read_all(a) == [*blocks, None]
    assert verify_cartridge(a).ok
