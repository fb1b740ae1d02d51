"""``vtl store push`` / ``vtl store pull`` against a real single-node Ceph radosgw."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_cluster import CephCluster, running
from ceph_cluster import vtl_json as vtl
from typer.testing import CliRunner

from tape_formats.store.chunk_store import ChunkStore
from vtl.cli.main import app
from vtl.library import Library

boto3 = pytest.importorskip("boto3")
runner = CliRunner()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with running(tmp_path_factory.mktemp("ceph"), ["vault"]) as cluster:
        yield cluster


def test_push_drop_pull_reads_back(endpoint: CephCluster, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    assert vtl(root, endpoint, "init", "--store", "dedup", "--drives", "1", "--slots", "2"
               ).exit_code == 0
    assert vtl(root, endpoint, "cartridge", "create", "A00001L8", "--capacity", "64MiB"
               ).exit_code == 0
    data = [bytes([i]) * 70000 + bytes(range(256)) * i for i in range(12)]
    lib = Library.open(root)
    try:
        lib.load("A00001L8", 0)
        cart = lib.drives[0].mount()
        for b in data:
            cart.write_block(b)
        cart.write_filemarks(1)
        lib.unload(0)
    finally:
        lib.close()
    r = vtl(root, endpoint, "store", "push", "s3://vault/lib1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["uploaded"] > 0
    r = vtl(root, endpoint, "store", "push", "s3://vault/lib1")
    assert json.loads(r.stdout)["uploaded"] == 0  # If-None-Match: nothing sent twice
    store = ChunkStore(root / "store")
    store.discard(list(store.ids()))
    store.close()
    r = vtl(root, endpoint, "store", "pull", "s3://vault/lib1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fetched"] > 0
    r = vtl(root, endpoint, "cartridge", "verify", "A00001L8")
    assert r.exit_code == 0, r.output


def test_a_bad_location_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    assert runner.invoke(app, ["--root", str(root), "init", "--store", "dedup"]).exit_code == 0
    r = runner.invoke(app, ["--root", str(root), "store", "push", "vault/lib1"])
    assert r.exit_code == 2 and "s3://" in r.output


def test_init_with_an_s3_store_makes_a_dedup_library_on_that_bucket(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    r = runner.invoke(app, ["--root", str(root), "init", "--store", "s3://vault/lib1"])
    assert r.exit_code == 0, r.output
    lib = Library.open(root, readonly=True)
    try:
        assert lib.config.store == "dedup"
        assert lib.config.s3.location == "s3://vault/lib1"
    finally:
        lib.close()
    assert (root / "store" / "packs").is_dir()
    r = runner.invoke(app, ["--root", str(tmp_path / "bad"), "init", "--store", "s3://"])
    assert r.exit_code == 2 and "s3://BUCKET/PREFIX" in r.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was made
