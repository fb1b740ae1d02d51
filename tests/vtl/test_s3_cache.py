"""A library made with ``vtl init --store s3://... --cache-size``: its chunks go to the
bucket after each sync point (the uploader, vtl/s3_uploader.py), the local store keeps at
most the cache size of them, least recently used packs evicted first (a sync point waits
for the uploader while more than that is not in the bucket yet), and a cartridge
larger than the cache reads back bit-identical (evicted chunks fetched on demand). A
SIGKILL of the uploader in the middle of its uploads loses nothing: the next start
finishes them. Against a real single-node Ceph radosgw."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cartridge_io import read_cartridge, write_tape_files
from ceph_cluster import CephCluster, running
from typer.testing import CliRunner

from tape_formats.store import recipe as recipes
from tape_formats.store import s3_packs
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.medium import recipe_path
from tape_formats.store.s3_cache import CacheState, cache_report, evict_to
from vtl import s3_uploader
from vtl.cli.main import app
from vtl.library import Library

pytest.importorskip("boto3")
runner = CliRunner()
BUCKET = "cache"
MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with running(tmp_path_factory.mktemp("ceph"), [BUCKET]) as cluster:
        yield cluster


@pytest.fixture
def s3_env(cluster: CephCluster, monkeypatch: pytest.MonkeyPatch) -> CephCluster:
    for key, value in cluster.env().items():  # the library's own uploads reach the bucket
        monkeypatch.setenv(key, value)
    return cluster


def vtl(root: Path, *args: str):
    r = runner.invoke(app, ["--root", str(root), "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout) if r.stdout.strip() else None


def _library(root: Path, prefix: str, *init: str) -> None:
    vtl(root, "init", "--store", f"s3://{BUCKET}/{prefix}", "--drives", "1", "--slots", "2",
        *init)
    vtl(root, "cartridge", "create", "C00001L8", "--capacity", "64MiB")


def _bucket_ids(cluster: CephCluster, prefix: str) -> set[bytes]:
    """The chunks the pack objects' manifests name."""
    found = s3_packs.read_all(cluster.client(), BUCKET, prefix)
    return {cid for rows in found.values() for cid, _where in rows}


def _files(seed: int, n: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    return [[rng.randbytes(64 << 10) for _ in range(16)] for _ in range(n)]  # 1 MiB each


def test_a_cartridge_larger_than_the_cache_writes_evicts_and_reads_back(
        s3_env: CephCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    _library(root, "small", "--cache-size", "4MiB")
    config = (root / "library.toml").read_text()
    assert 'upload = "auto"' in config and "cache_size = 4194304" in config
    after_sync = []  # bytes not in the bucket yet when a sync point returns
    synced = s3_uploader.Uploader.synced

    def watched(self: s3_uploader.Uploader) -> None:
        synced(self)
        after_sync.append(cache_report(ChunkStore(root / "store"),
                                       CacheState(root / "store")).pending_bytes)

    monkeypatch.setattr(s3_uploader.Uploader, "synced", watched)
    files = _files(1, 6)
    for part in (files[:5], files[5:]):  # sessions of 5 and 1 MiB, a filemark every MiB
        write_tape_files(root, "C00001L8", part, append=True)
    assert len(after_sync) >= 6 and max(after_sync) <= 4 * MIB  # a full cache holds writers
    s = vtl(root, "store", "stats")
    print("after the writes:", {k: s[k] for k in ("local_bytes", "bucket_bytes",
                                                     "pending_bytes", "bucket_chunks")})
    assert s["cache_size"] == 4 * MIB and s["pending_bytes"] == 0
    assert 0 < s["local_bytes"] <= 4 * MIB  # the last session's pack: the most recent
    assert s["packs"] == 1
    assert s["bucket_bytes"] >= 6 * MIB and s["bucket_chunks"] == s["chunks"]
    assert 0 < s["bucket_packs"] * 4 < s["chunks"]  # objects of many chunks, not one each
    store = ChunkStore(root / "store")
    assert {i for i in store.ids()} < _bucket_ids(s3_env, "small")
    store.close()
    assert read_cartridge(root, "C00001L8") == [b for f in files for b in f]
    lib = Library.open(root)  # the read's fetched chunks went to a pack of its own:
    lib.close()  # this writer's pass scans it (nothing to send) and trims the cache again
    s = vtl(root, "store", "stats")
    assert s["local_bytes"] <= 4 * MIB and s["pending_bytes"] == 0


KILLED_UPLOADER = r"""
import sys
from pathlib import Path
from tape_formats.store import s3_cache, s3_packs
from vtl.library import Library
s3_cache.UPLOAD_THREADS = 1  # small pack objects, one at a time
s3_packs.PACK_TARGET = 256 << 10
Library.open(Path(sys.argv[1])).close()  # a start with uploads pending: a pass, drained
"""


def test_a_killed_uploader_is_finished_by_the_next_start(s3_env: CephCluster,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "lib"
    _library(root, "killed")
    toml = root / "library.toml"
    auto = toml.read_text()
    toml.write_text(auto.replace('upload = "auto"', 'upload = "manual"'))
    files = _files(2, 8)
    write_tape_files(root, "C00001L8", files)  # 8 MiB durable locally, nothing uploaded
    toml.write_text(auto)
    state = CacheState(root / "store")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPLOADER, str(root)], env=env)
    deadline = time.monotonic() + 120
    while state.bucket_bytes()[0] < 20 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = state.bucket_bytes()[0]
    store = ChunkStore(root / "store")
    local = set(store.ids())
    print(f"killed after {done} of {len(local)} chunks recorded uploaded")
    assert done < len(local), "the uploader finished before the kill: no crash tested"
    assert not local <= _bucket_ids(s3_env, "killed")
    Library.open(root).close()  # the next start finishes the upload
    assert local <= _bucket_ids(s3_env, "killed")
    assert state.bucket_bytes()[0] == len(local)
    state.close()
    store.close()
    assert vtl(root, "store", "stats")["pending_bytes"] == 0
    assert read_cartridge(root, "C00001L8") == [b for f in files for b in f]


def test_a_second_gateway_sends_only_what_the_bucket_lacks(s3_env: CephCluster,
                                                          tmp_path: Path) -> None:
    """Two libraries (gateways) on one prefix: B reads A's manifests before it uploads, so
    the chunks both wrote are in the bucket once, and B, its cache emptied, reads its
    cartridge back from pack objects A put as well as its own."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        _library(root, "shared")
    common, own = _files(4, 2), _files(5, 1)
    write_tape_files(a, "C00001L8", common)  # A's close: its chunks are in the bucket
    write_tape_files(b, "C00001L8", common + own)
    found = s3_packs.read_all(s3_env.client(), BUCKET, "shared")
    ids = [cid for rows in found.values() for cid, _where in rows]
    assert len(ids) == len(set(ids)), "a chunk was sent twice"
    store, state = ChunkStore(b / "store"), CacheState(b / "store")
    assert set(store.ids()) <= set(ids)
    assert evict_to(store, state, 0).local_bytes == 0
    state.close()
    store.close()
    assert read_cartridge(b, "C00001L8") == [blk for f in common + own for blk in f]


def test_chunks_a_collection_took_are_sent_again_when_named_again(
        s3_env: CephCluster, tmp_path: Path) -> None:
    """A bucket collection takes the chunks of a deleted cartridge that are still in the
    local cache; a new cartridge of the same data dedups against that cache. The next
    pass, seeing the collection's mark, scans the local packs again and sends those chunks
    before it evicts their pack: the cartridge reads back once the cache is trimmed."""
    root = tmp_path / "lib"
    _library(root, "again", "--cache-size", "4MiB")
    first, more = _files(6, 2), _files(7, 4)
    write_tape_files(root, "C00001L8", first)
    vtl(root, "cartridge", "delete", "C00001L8", "--yes")
    vtl(root, "store", "push")  # the reference list without its chunks
    assert vtl(root, "store", "gc", "--bucket", "--grace", "0")["packs_deleted"] > 0
    vtl(root, "cartridge", "create", "C00002L8", "--capacity", "64MiB")
    write_tape_files(root, "C00002L8", first + more)
    ids = set(recipes.load(recipe_path(root / "cartridges" / "C00002L8.vtape")).ch_ids)
    assert ids <= _bucket_ids(s3_env, "again")
    assert read_cartridge(root, "C00002L8") == [b for f in first + more for b in f]
