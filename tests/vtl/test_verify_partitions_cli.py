"""``vtl cartridge verify`` and ``inspect`` cover every partition of a partitioned cartridge
(each its own file), not only the first: a damaged record in partition 1 fails verify."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_vtl_cli import vtl, vtl_json

from tape_formats.cartridge import TapeCartridge

MiB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    assert vtl(root, "init", "--drives", "1", "--slots", "2", "--mailslots", "0").exit_code == 0
    assert vtl(root, "cartridge", "create", "P00001L8", "--capacity", "64MiB").exit_code == 0
    cart = TapeCartridge.open(root / "cartridges" / "P00001L8.vtape")
    try:
        cart.format_partitions([16 * MiB])
        cart.write_block(b"index partition " * 64, compress=False)
        cart.write_filemarks(1)
        data = cart.partition(1)
        for i in range(3):
            data.write_block(bytes([i]) * 5000, compress=False)
        data.write_filemarks(1)
    finally:
        cart.close()
    return root


def test_verify_and_inspect_every_partition(root: Path) -> None:
    (root / "cartridges" / "P00001L8.vtape.p1.idx").unlink(missing_ok=True)
    out = vtl_json(root, "cartridge", "verify", "P00001L8", "--rebuild")  # catalog too
    assert out["ok"] and out["objects"] == 2
    assert [(p["partition"], p["objects"], p["blocks"]) for p in out["partitions"]] == \
        [(1, 4, 3)]
    assert "partition 1: 4 objects (3 blocks, 1 filemarks)" in \
        vtl(root, "cartridge", "verify", "P00001L8").stdout
    info = vtl_json(root, "cartridge", "inspect", "P00001L8")
    assert [(p["partition"], p["objects"], p["tape_files"]) for p in info["partitions"]] == \
        [(1, 4, 1)]
    part = root / "cartridges" / "P00001L8.vtape.p1"
    raw = bytearray(part.read_bytes())
    raw[-200] ^= 0xFF  # inside the last data block's payload
    part.write_bytes(bytes(raw))
    r = vtl(root, "--json", "cartridge", "verify", "P00001L8")
    assert r.exit_code == 1
    assert any(e.startswith("partition 1: object 2") for e in
               __import__("json").loads(r.stdout)["errors"])
