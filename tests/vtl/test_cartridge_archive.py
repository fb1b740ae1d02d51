"""``vtl cartridge archive`` / ``retrieve`` against a real single-node Ceph radosgw (started
here, stopped by pid): multipart and checked uploads, the local files freed, the catalog
saying where the cartridge is, a checked retrieval, and a SIGKILL in the middle of an
archive settled by the next run."""

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
from cartridge_io import read_cartridge as read
from cartridge_io import write_tape_files
from ceph_cluster import CephCluster, running
from ceph_cluster import vtl_json as vtl

from tape_formats.store import s3_packs
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.pack import try_lock

boto3 = pytest.importorskip("boto3")
PART = 5 << 20


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CephCluster, object]]:
    with running(tmp_path_factory.mktemp("ceph")) as cluster:
        client = cluster.client()
        client.create_bucket(Bucket="tapes")
        client.create_bucket(Bucket="worm", ObjectLockEnabledForBucket=True)
        yield cluster, client


def make_library(root: Path, cluster: CephCluster, store: str, location: str,
                 extra: str = "") -> None:
    assert vtl(root, cluster, "init", "--store", store, "--drives", "1", "--slots", "4"
               ).exit_code == 0
    with open(root / "library.toml", "a") as f:
        f.write(f'\n[s3]\nlocation = "{location}"\npart_size = {PART}\n{extra}')


def write(root: Path, barcode: str, blocks: list[bytes]) -> None:
    write_tape_files(root, barcode, [blocks])


def keys(client, bucket: str, prefix: str) -> list[str]:
    r = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in r.get("Contents", [])]


def blocks_of(seed: int, n: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(n)]


@pytest.mark.parametrize("store", ["plain", "dedup"])
def test_archive_frees_local_files_and_retrieve_brings_it_back(ceph, tmp_path: Path,
                                                               store: str) -> None:
    cluster, client = ceph
    root = tmp_path / "lib"
    make_library(root, cluster, store, f"s3://tapes/{store}")
    assert vtl(root, cluster, "cartridge", "create", "A00001L8", "--capacity", "64MiB"
               ).exit_code == 0
    # plain: 12 MiB, three parts; dedup: only the chunks are big (one PUT/GET each)
    data = blocks_of(1, 48 if store == "plain" else 12, 256 << 10)
    write(root, "A00001L8", data)
    r = vtl(root, cluster, "cartridge", "archive", "A00001L8")
    assert r.exit_code == 0, r.output
    url = json.loads(r.stdout)["archived"][0]["url"]
    assert url.startswith(f"s3://tapes/{store}/tapes/A00001L8/")
    assert not list((root / "cartridges").glob("A00001L8.vtape*"))
    row = json.loads(vtl(root, cluster, "cartridge", "show", "A00001L8").stdout)
    assert row["location"] == url and row["archived_to"] == url
    base = url[len("s3://tapes/"):]
    names = {k.rsplit("/", 1)[1] for k in keys(client, "tapes", base + "/")}
    assert {"A00001L8.vtape", "manifest.json"} <= names
    if store == "plain":  # multipart: the ETag of three parts
        assert client.head_object(Bucket="tapes", Key=f"{base}/A00001L8.vtape"
                                  )["ETag"].endswith('-3"')
    else:  # only the chunks are big; the local store frees them at gc
        r = vtl(root, cluster, "store", "gc")
        assert json.loads(r.stdout)["chunks_freed"] > 0
    for args in (("cartridge", "import", "A00001L8"), ("cartridge", "verify", "A00001L8"),
                 ("cartridge", "erase", "A00001L8", "--yes")):
        r = vtl(root, cluster, *args)
        assert r.exit_code == 2 and "archived" in r.stderr, (args, r.output)
    r = vtl(root, cluster, "cartridge", "retrieve", "A00001L8")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["retrieved"][0]["to"].startswith("mailslot")
    assert read(root, "A00001L8") == data
    assert keys(client, "tapes", base + "/") == []  # the archive is gone once retrieved
    assert vtl(root, cluster, "cartridge", "verify", "A00001L8").exit_code == 0


VTL = str(Path(sys.executable).with_name("vtl"))


def _run_and_kill(root: Path, cluster: CephCluster, args: list[str], when) -> None:
    """Start ``vtl ARGS`` and SIGKILL it once ``when()`` holds (or it ended by itself)."""
    proc = subprocess.Popen([VTL, "--root", str(root), *args],
                            env={**os.environ, **cluster.env()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while proc.poll() is None and not when() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_archive_is_settled_by_the_next_run(ceph, tmp_path: Path) -> None:
    """SIGKILL an archive in the middle of its multipart upload, then just after its
    manifest is up, then a retrieval in the middle of its download: after each, the next
    run (``vtl store settle``) leaves the cartridge local and whole or archived and whole,
    never neither, and no incomplete upload behind."""
    cluster, client = ceph
    root = tmp_path / "lib"
    make_library(root, cluster, "plain", "s3://tapes/kill")
    assert vtl(root, cluster, "cartridge", "create", "A00002L8", "--capacity", "64MiB"
               ).exit_code == 0
    data = blocks_of(2, 64, 256 << 10)  # 16 MiB: four parts
    write(root, "A00002L8", data)
    cartridges = root / "cartridges"

    def uploading() -> bool:
        return bool(client.list_multipart_uploads(Bucket="tapes", Prefix="kill/").get("Uploads"))

    def manifest_up() -> bool:
        return any(k.endswith("manifest.json") for k in keys(client, "tapes", "kill/tapes/"))

    def downloading() -> bool:
        return any(p.name.endswith(".retrieving") for p in cartridges.iterdir())

    def settled() -> str:
        r = vtl(root, cluster, "store", "settle")
        assert r.exit_code == 0, r.output
        assert not uploading()
        assert not list((root / "archive-journal").glob("*.json"))
        row = json.loads(vtl(root, cluster, "cartridge", "show", "A00002L8").stdout)
        local = sorted(p.name for p in cartridges.glob("A00002L8.vtape*"))
        if row["archived_to"]:
            assert local == []
            base = row["archived_to"][len("s3://tapes/"):]
            assert f"{base}/manifest.json" in keys(client, "tapes", base + "/")
            return "archived"
        assert "A00002L8.vtape" in local and read(root, "A00002L8") == data
        assert keys(client, "tapes", "kill/tapes/") == []
        return "local"

    _run_and_kill(root, cluster, ["cartridge", "archive", "A00002L8"], uploading)
    assert settled() == "local"  # rolled back: the upload aborted, its parts deleted
    _run_and_kill(root, cluster, ["cartridge", "archive", "A00002L8"], manifest_up)
    assert settled() == "archived"  # completed: the manifest matched the local files
    _run_and_kill(root, cluster, ["cartridge", "retrieve", "A00002L8"], downloading)
    assert settled() == "archived"  # rolled back: the partial local copy removed
    r = vtl(root, cluster, "cartridge", "retrieve", "A00002L8")
    assert r.exit_code == 0, r.output
    assert settled() == "local"


def test_a_worm_cartridge_is_archived_under_object_lock(ceph, tmp_path: Path) -> None:
    cluster, client = ceph
    root = tmp_path / "lib"
    make_library(root, cluster, "plain", "s3://worm/lib",
                 'worm_lock = "compliance"\nworm_retention_days = 1\n')
    assert vtl(root, cluster, "cartridge", "create", "A00003L8", "--capacity", "64MiB",
               "--worm").exit_code == 0
    data = blocks_of(3, 8, 64 << 10)
    write(root, "A00003L8", data)
    r = vtl(root, cluster, "cartridge", "archive", "A00003L8")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)["archived"][0]
    assert report["locked_until"]
    base = report["url"][len("s3://worm/"):]
    versions = client.list_object_versions(Bucket="worm", Prefix=base + "/")["Versions"]
    assert len(versions) >= 3  # the cartridge file, its sidecars, the manifest
    for v in versions:
        retention = client.get_object_retention(Bucket="worm", Key=v["Key"])["Retention"]
        assert retention["Mode"] == "COMPLIANCE"
        with pytest.raises(client.exceptions.ClientError) as info:
            client.delete_object(Bucket="worm", Key=v["Key"], VersionId=v["VersionId"])
        assert info.value.response["Error"]["Code"] == "AccessDenied"
    r = vtl(root, cluster, "cartridge", "retrieve", "A00003L8")
    assert r.exit_code == 0, r.output
    assert read(root, "A00003L8") == data
    assert len(client.list_object_versions(Bucket="worm", Prefix=base + "/")["Versions"]
               ) == len(versions)  # a WORM archive outlives its retrieval


def chunk_keys(client, bucket: str, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                              Prefix=f"{prefix}/chunks/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def pack_chunks(client, bucket: str, prefix: str) -> dict[str, set[bytes]]:
    """The chunks of each pack object, as its manifest names them."""
    return {name: {cid for cid, _where in rows}
            for name, rows in s3_packs.read_all(client, bucket, prefix).items()}


def test_bucket_gc_frees_the_chunks_only_a_deleted_cartridge_named(ceph, tmp_path: Path
                                                                   ) -> None:
    from vtl.bucket_gc import _archive_chunks, uploading
    from vtl.leases import LeaseStore

    cluster, client = ceph
    root = tmp_path / "lib"
    make_library(root, cluster, "dedup", "s3://tapes/gc")
    shared = blocks_of(11, 24, 64 << 10)
    kept, gone = ("A00011L8", shared + blocks_of(12, 8, 64 << 10)), \
        ("A00012L8", shared + blocks_of(13, 8, 64 << 10))
    urls = {}
    for barcode, data in (kept, gone):
        assert vtl(root, cluster, "cartridge", "create", barcode, "--capacity", "64MiB"
                   ).exit_code == 0
        write(root, barcode, data)
        r = vtl(root, cluster, "cartridge", "archive", barcode)
        assert r.exit_code == 0, r.output
        urls[barcode] = json.loads(r.stdout)["archived"][0]["url"]
    before = pack_chunks(client, "tapes", "gc")
    for args in (("retrieve", gone[0]), ("delete", gone[0], "--yes")):  # its archive goes
        assert vtl(root, cluster, "cartridge", *args).exit_code == 0
    assert vtl(root, cluster, "store", "gc").exit_code == 0  # and its local chunks

    with uploading(client, "tapes", "gc", "writer"):  # a writer between chunks and manifest
        r = vtl(root, cluster, "store", "gc", "--bucket", "--grace", "0")
        assert r.exit_code != 0 and "writer is uploading chunks" in r.stderr, r.output
    other = LeaseStore(client, "tapes", "gc", "gw-x", 60, folder="gc")
    held = other.take("collector")
    r = vtl(root, cluster, "store", "gc", "--bucket", "--grace", "0")
    assert r.exit_code != 0 and "another bucket collection (by gw-x)" in r.stderr, r.output
    other.release(held)

    r = vtl(root, cluster, "store", "gc", "--bucket")  # every chunk is younger than an hour
    assert r.exit_code == 0 and json.loads(r.stdout)["chunks_deleted"] == 0, r.output
    r = vtl(root, cluster, "store", "gc", "--bucket", "--grace", "0")
    assert r.exit_code == 0, r.output
    named = set(_archive_chunks(client, "tapes", urls[kept[0]].split("/", 3)[3]))
    after = pack_chunks(client, "tapes", "gc")
    out = json.loads(r.stdout)
    assert named <= set().union(*after.values())  # what the kept archive names stays
    assert all(chunks & named for chunks in after.values())  # packs of nothing named go
    assert out["packs_deleted"] == len(before) - len(after) > 0
    assert out["chunks_deleted"] == sum(len(c) for n, c in before.items() if n not in after)
    r = vtl(root, cluster, "cartridge", "retrieve", kept[0])  # its chunks from the bucket
    assert r.exit_code == 0, r.output
    for _number, path in ChunkStore(root / "store").pack_files():  # (in this process, as
        fd = os.open(path, os.O_RDONLY)  # in vtl serve) the retrieval let go of its pack
        try:
            assert try_lock(fd), f"{path.name} is still held after the retrieval"
        finally:
            os.close(fd)
    assert read(root, kept[0]) == kept[1]


def test_bucket_gc_skips_a_locked_chunk(ceph) -> None:
    from datetime import UTC, datetime, timedelta

    from vtl.bucket_gc import collect

    _cluster, client = ceph
    until = datetime.now(UTC) + timedelta(days=1)
    for name, lock in (("aa" * 32, {"ObjectLockMode": "COMPLIANCE",
                                    "ObjectLockRetainUntilDate": until}), ("bb" * 32, {})):
        client.put_object(Bucket="worm", Key=f"gcworm/chunks/{name}", Body=b"\0chunk", **lock)
    r = collect(client, "worm", "gcworm", "test", grace=0)
    assert (r.chunks_locked, r.chunks_deleted) == (1, 1)
    assert chunk_keys(client, "worm", "gcworm") == {f"gcworm/chunks/{'aa' * 32}"}
