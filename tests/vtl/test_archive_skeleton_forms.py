"""An archive's compact skeleton of both dedup layouts: a dense skeleton goes as it is, an
older sparse one without its holes, and each comes back as the cartridge it was (no S3
needed: the two functions between the files and the objects)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cartridge_io import new_dedup_cartridge

from tape_formats.cartridge import RecordKind, TapeCartridge
from tape_formats.store import recipe as recipes
from tape_formats.store.medium import recipe_path
from vtl.archive import compact_skeleton, expand_skeleton


def _cartridge(tmp_path: Path, *, sparse: bool) -> tuple[Path, list[bytes]]:
    """20 blocks of 1-30,000 bytes and a run of two filemarks."""
    blocks = [random.Random(n).randbytes(1 + 1500 * n) for n in range(20)]
    path = new_dedup_cartridge(tmp_path / "cartridges", "A00001L8", tmp_path / "store",
                               sparse=sparse)
    with TapeCartridge.open(path) as c:
        for b in blocks:
            c.write_block(b)
        c.write_filemarks(2)
    return path, blocks


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_a_compact_skeleton_comes_back_as_the_cartridge(tmp_path: Path, sparse: bool) -> None:
    path, blocks = _cartridge(tmp_path, sparse=sparse)
    rec = recipes.load(recipe_path(path))
    compact = compact_skeleton(path, rec)
    assert len(compact) == 512 + 32 * 21  # header, 20 record headers, a filemark run
    size = path.stat().st_size
    (tmp_path / "object").write_bytes(compact)
    expand_skeleton(tmp_path / "object", tmp_path / "back", rec, size)
    path.unlink()
    (tmp_path / "back").rename(path)
    assert path.stat().st_size == size
    with TapeCartridge.open(path, readonly=True) as c:
        got = []
        while (r := c.read_block()).kind is RecordKind.DATA:
            got.append(bytes(r.data))
    assert got == blocks
