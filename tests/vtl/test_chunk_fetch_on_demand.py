"""A dedup library whose chunks live in S3 (pushed, then evicted locally): a read fetches a
missing chunk from the bucket with read-ahead, so restoring one tape file GETs its own chunks
and a read-ahead window, not the cartridge's. Against a real single-node Ceph radosgw."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cartridge_io import read_blocks, write_tape_files
from ceph_cluster import CephCluster, running
from ceph_cluster import vtl_json as vtl

from tape_formats.store import dedup_medium, s3_packs
from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.medium import recipe_path
from vtl.library import Library

pytest.importorskip("boto3")
WINDOW = 8  # chunks of read-ahead in the test of one file (about 1 MiB)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with running(tmp_path_factory.mktemp("ceph"), ["chunks"]) as cluster:
        yield cluster


def _written(root: Path, cluster: CephCluster, monkeypatch: pytest.MonkeyPatch, prefix: str,
             barcode: str, seed: int, blocks: int, n: int) -> list[list[bytes]]:
    """A dedup library at ``root`` with the bucket at ``prefix``, ``n`` tape files of
    ``blocks`` 64 KiB blocks written on ``barcode``; returns them."""
    for key, value in cluster.env().items():  # the library's own reads reach the bucket too
        monkeypatch.setenv(key, value)
    assert vtl(root, cluster, "init", "--store", "dedup", "--drives", "1", "--slots", "2"
               ).exit_code == 0
    with open(root / "library.toml", "a") as f:
        f.write(f'\n[s3]\nlocation = "s3://chunks/{prefix}"\n')
    assert vtl(root, cluster, "cartridge", "create", barcode, "--capacity", "64MiB"
               ).exit_code == 0
    rng = random.Random(seed)
    files = [[rng.randbytes(64 << 10) for _ in range(blocks)] for _ in range(n)]
    write_tape_files(root, barcode, files)
    return files


def test_restoring_one_file_gets_only_its_chunks(cluster: CephCluster, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    files = _written(root, cluster, monkeypatch, "lib", "A00001L8", 5, 24, 4)  # 1.5 MiB each
    monkeypatch.setattr(dedup_medium, "READ_AHEAD", WINDOW)  # a window smaller than a file
    r = vtl(root, cluster, "store", "push", "--evict")
    assert r.exit_code == 0, r.output
    pushed = json.loads(r.stdout)
    assert pushed["evicted"] == pushed["uploaded"] > 0
    store = ChunkStore(root / "store")
    assert not list(store.ids())  # nothing local any more
    total = len(recipes.load(recipe_path(root / "cartridges" / "A00001L8.vtape")).ch_ids)

    lib = Library.open(root, readonly=True)
    try:
        cart = lib.open_readonly("A00001L8")
        remote = ChunkStore(root / "store").remote
        assert remote is not None
        third = list(cart.tape_files())[2]
        cart.locate(third.first_object)
        assert read_blocks(cart, to_filemark=True) == files[2]
        per_file = total // len(files)
        print(f"one file of {len(files)}: {remote.chunks_fetched} of {total} chunks in "
              f"{remote.gets} ranged GETs")
        assert remote.chunks_fetched <= per_file + WINDOW + 2
        assert remote.chunks_fetched < total * 0.7
        assert remote.gets * 2 <= remote.chunks_fetched  # adjacent records: one GET
        cart.locate(0)  # the rest of the cartridge comes down as it is read
        assert read_blocks(cart) == [b for blocks in files for b in blocks]
        assert remote.chunks_fetched <= total  # each chunk fetched once, then from the cache
        cart.close()
    finally:
        lib.close()


def test_chunks_of_the_per_chunk_layout_still_read(cluster: CephCluster, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket filled by an earlier version holds one object per chunk,
    ``<prefix>/chunks/<hex>``: a read finds no manifest naming them and GETs those."""
    root = tmp_path / "lib"
    files = _written(root, cluster, monkeypatch, "old", "A00002L8", 6, 8, 2)
    store = ChunkStore(root / "store")
    ids = list(store.ids())
    client = cluster.client()
    for cid in ids:  # as versions before pack objects pushed them
        client.put_object(Bucket="chunks", Key=s3_packs.legacy_key("old", cid),
                          Body=store.read_stored(cid))
    store.discard(ids)
    store.close()
    lib = Library.open(root, readonly=True)
    try:
        cart = lib.open_readonly("A00002L8")
        remote = ChunkStore(root / "store").remote
        assert read_blocks(cart) == [b for blocks in files for b in blocks]
        assert remote is not None and remote.chunks_fetched == remote.gets == len(ids)
        cart.close()
    finally:
        lib.close()


def test_bucket_gc_rewrites_a_mostly_dead_pack(cluster: CephCluster, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack object holding a deleted cartridge's chunks and fewer of a kept one is
    rewritten by ``gc --bucket``; a reader that still maps the kept chunks to the old pack
    finds it gone and reads them from the new one."""
    root = tmp_path / "lib"
    _written(root, cluster, monkeypatch, "gc", "A00003L8", 7, 24, 1)  # 1.5 MiB, deleted
    kept = [[random.Random(8).randbytes(64 << 10) for _ in range(6)]]
    assert vtl(root, cluster, "cartridge", "create", "A00004L8", "--capacity", "64MiB"
               ).exit_code == 0
    write_tape_files(root, "A00004L8", kept)
    assert vtl(root, cluster, "store", "push").exit_code == 0  # one pack object of both
    assert vtl(root, cluster, "cartridge", "delete", "A00003L8", "--yes").exit_code == 0
    assert vtl(root, cluster, "store", "push").exit_code == 0  # the reference list again
    r = vtl(root, cluster, "store", "gc", "--bucket", "--grace", "0")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["packs_rewritten"], out["packs_deleted"]) == (1, 1) and out["chunks_deleted"]
    ids = set(recipes.load(recipe_path(root / "cartridges" / "A00004L8.vtape")).ch_ids)
    found = s3_packs.read_all(cluster.client(), "chunks", "gc")
    assert [{cid for cid, _w in rows} for rows in found.values()] == [ids]
    store = ChunkStore(root / "store")
    store.discard(list(store.ids()))  # (the library's table still names the old pack)
    store.close()
    lib = Library.open(root, readonly=True)
    try:
        cart = lib.open_readonly("A00004L8")
        assert read_blocks(cart) == kept[0]
        cart.close()
    finally:
        lib.close()
