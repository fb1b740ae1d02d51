"""Two gateways (two library roots, as on two machines) sharing one bucket of a real
single-node Ceph radosgw: a cartridge archived by one is imported by the other and reads
back bit-identical, both ways; its lease keeps it on one gateway at a time; when the
holder's ``vtl serve`` is SIGKILLed, the other takes the cartridge once the lease expired;
and a holder paused (SIGSTOP) past its lease is fenced when it resumes: its drive refuses
writes, its archive is refused, and an archive of its old generation is skipped."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cartridge_io import read_cartridge as read
from cartridge_io import write_tape_files
from ceph_cluster import CephCluster, running
from ceph_cluster import vtl_json as vtl
from iscsi_support import RawInitiator, pattern, scsi_status, sense_of
from served_library import VTL, free_port

from vtl.leases import LeaseStore, kept

boto3 = pytest.importorskip("boto3")
TTL = 2
BC = "G00001L8"


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with running(tmp_path_factory.mktemp("ceph"), ["shared"]) as cluster:
        yield cluster


def gateway(root: Path, cluster: CephCluster, name: str, location: str, ttl: int) -> Path:
    assert vtl(root, cluster, "init", "--store", location, "--drives", "1", "--slots", "4"
               ).exit_code == 0
    toml = root / "library.toml"  # chunks move with archives here, not the uploader's
    toml.write_text(toml.read_text().replace('upload = "auto"', 'upload = "manual"')
                    + f'gateway = "{name}"\nlease_ttl = {ttl}\n')  # (timing as before it)
    return root


def blocks_of(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(64 << 10) for _ in range(n)]


def remote(root: Path, cluster: CephCluster) -> dict[str, dict]:
    r = vtl(root, cluster, "cartridge", "list", "--remote")
    assert r.exit_code == 0, r.output
    return {row["barcode"]: row for row in json.loads(r.stdout)}


def two_gateways(tmp_path: Path, cluster: CephCluster, prefix: str, ttl: int
                 ) -> tuple[Path, Path]:
    location = f"s3://shared/{prefix}"
    a = gateway(tmp_path / "a", cluster, "gw-a", location, ttl)
    b = gateway(tmp_path / "b", cluster, "gw-b", location, ttl)
    return a, b


def test_a_cartridge_goes_from_one_gateway_to_the_other_and_back(ceph, tmp_path: Path
                                                                 ) -> None:
    a, b = two_gateways(tmp_path, ceph, "both-ways", 60)  # no vtl serve renews
    assert vtl(a, ceph, "cartridge", "create", BC, "--capacity", "64MiB").exit_code == 0
    first = blocks_of(1, 24)
    write_tape_files(a, BC, [first])
    r = vtl(a, ceph, "cartridge", "archive", BC)
    assert r.exit_code == 0, r.output
    seen = remote(b, ceph)[BC]
    assert seen["archive"] and seen["held_by"] is None

    r = vtl(b, ceph, "cartridge", "import", "--from", "s3", BC)
    assert r.exit_code == 0, r.output
    assert read(b, BC) == first
    assert remote(a, ceph)[BC]["held_by"] == "gw-b"
    assert json.loads(vtl(b, ceph, "cartridge", "show", BC).stdout)["lease"] == "gw-b"
    for args in (("cartridge", "retrieve", BC), ("cartridge", "import", "--from", "s3", BC)):
        r = vtl(a, ceph, *args)  # A still knows it as archived, but B holds it
        assert r.exit_code == 2 and "in use by gateway gw-b" in r.stderr, (args, r.output)

    second = blocks_of(2, 20)
    write_tape_files(b, BC, [second, first[:3]])
    r = vtl(b, ceph, "cartridge", "archive", BC)
    assert r.exit_code == 0, r.output
    seen = remote(a, ceph)[BC]
    assert seen["held_by"] is None and seen["archive"] == json.loads(r.stdout)["archived"][0]["url"]
    client = ceph.client()
    manifests = [o["Key"] for o in client.list_objects_v2(
        Bucket="shared", Prefix=f"both-ways/tapes/{BC}/")["Contents"]
        if o["Key"].endswith("manifest.json")]
    assert len(manifests) == 1  # the archive A made was replaced by B's

    r = vtl(a, ceph, "cartridge", "retrieve", BC)
    assert r.exit_code == 0, r.output
    assert read(a, BC) == second + first[:3]


def serve(root: Path, cluster: CephCluster, port: int = 0) -> subprocess.Popen:
    """``vtl serve`` on a free port, once it says ready (its lease keeper is running)."""
    proc = subprocess.Popen([*VTL, "--root", str(root), "serve", "--portal",
                             f"127.0.0.1:{port or free_port()}"],
                            env={**os.environ, **cluster.env()},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc
    proc.kill()
    raise AssertionError("vtl serve did not start")


def test_a_killed_holder_loses_the_cartridge_once_its_lease_expires(ceph, tmp_path: Path
                                                                    ) -> None:
    a, b = two_gateways(tmp_path, ceph, "kill", TTL)
    assert vtl(a, ceph, "cartridge", "create", BC, "--capacity", "64MiB").exit_code == 0
    data = blocks_of(3, 16)
    write_tape_files(a, BC, [data])
    assert vtl(a, ceph, "cartridge", "archive", BC).exit_code == 0
    assert vtl(b, ceph, "cartridge", "import", "--from", "s3", BC).exit_code == 0
    holder = serve(b, ceph)
    try:
        time.sleep(TTL * 1.5)  # past one TTL: only renewals keep it B's
        r = vtl(a, ceph, "cartridge", "retrieve", BC)
        assert r.exit_code == 2 and "in use by gateway gw-b" in r.stderr, r.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + TTL * 3
    while (r := vtl(a, ceph, "cartridge", "retrieve", BC)).exit_code != 0:
        assert "in use by gateway gw-b" in r.stderr, r.output
        assert time.monotonic() < deadline, "the dead holder's lease did not expire"
        time.sleep(0.3)
    assert read(a, BC) == data
    assert remote(b, ceph)[BC]["held_by"] == "gw-a"
    r = vtl(b, ceph, "cartridge", "archive", BC)  # B's copy is stale now
    assert r.exit_code == 2 and "held by gateway gw-a" in r.stderr, r.output
    r = vtl(b, ceph, "cartridge", "verify", BC)  # and mounting it is refused
    assert r.exit_code == 2 and "stale" in r.stderr, r.output

    newer = blocks_of(4, 8)
    with kept(a, LeaseStore(ceph.client(), "shared", "kill", "gw-a", TTL)):
        write_tape_files(a, BC, [newer])  # (A runs no vtl serve: writes need renewals)
    assert vtl(a, ceph, "cartridge", "archive", BC).exit_code == 0
    r = vtl(b, ceph, "cartridge", "import", "--from", "s3", BC)  # the current one, for the stale
    assert r.exit_code == 0, r.output
    assert read(b, BC) == newer


def test_conditional_puts_let_one_gateway_of_two_win_a_lease(ceph) -> None:
    from vtl.leases import CartridgeLeased, LeaseLost

    client = ceph.client()
    a, b = (LeaseStore(client, "shared", "race", gw, 1) for gw in ("gw-a", "gw-b"))
    mine = a.take(BC)
    with pytest.raises(CartridgeLeased, match="in use by gateway gw-a"):
        b.take(BC)
    mine = a.renew(mine)
    time.sleep(1.1)  # expired, unrenewed: both see the same version and race to take it over
    time.sleep(0.3)  # and past the takers' grace (a fifth of the TTL)
    seen = b.read(BC)
    won = b.take(BC)  # a take-over: the next generation
    assert (seen.generation, won.generation) == (1, 2)
    with pytest.raises(LeaseLost, match="held by gateway gw-b"):
        a.renew(mine)  # the old holder's renewal fails
    with pytest.raises(LeaseLost, match="held by gateway gw-b"):
        a.renew(seen)  # and so does another taker's of the same version: 412
    assert b.read(BC).gateway == "gw-b"
    b.release(won)
    released = b.read(BC)
    assert (released.gateway, released.generation) == ("", 2)  # the token survives release
    assert a.take(BC).generation == 3


def test_two_gateways_racing_for_a_free_lease_one_gets_it(ceph) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from vtl.leases import CartridgeLeased

    client = ceph.client()
    stores = [LeaseStore(client, "shared", "race2", gw, 30) for gw in ("gw-a", "gw-b")]
    for n in range(5):
        barcode, start = f"R{n:05d}L8", Barrier(2)

        def take(store: LeaseStore, barcode=barcode, start=start) -> str:
            start.wait()
            try:
                return store.take(barcode).gateway
            except CartridgeLeased:
                return "refused"

        with ThreadPoolExecutor(2) as pool:
            got = sorted(pool.map(take, stores))
        holder = stores[0].read(barcode).gateway
        assert got == sorted([holder, "refused"]), got


WRITE6 = bytes([0x0A, 0, 0, 0x40, 0, 0])  # one variable 16 KiB block


def test_a_paused_holder_is_fenced_and_its_late_archive_is_skipped(ceph, tmp_path: Path
                                                                   ) -> None:
    from vtl import archive as archives
    from vtl.library import Library

    a, b = two_gateways(tmp_path, ceph, "fence", TTL)
    assert vtl(a, ceph, "cartridge", "create", BC, "--capacity", "64MiB").exit_code == 0
    write_tape_files(a, BC, [blocks_of(5, 4)])
    assert vtl(a, ceph, "cartridge", "archive", BC).exit_code == 0  # lease generation 1
    assert vtl(a, ceph, "cartridge", "retrieve", BC).exit_code == 0  # taken over: 2
    with Library.open(a) as lib:
        lib.load(BC, 0)
    port = free_port()
    holder = serve(a, ceph, port)
    ini = RawInitiator(port, timeout=20)
    try:
        ini.login({"MaxRecvDataSegmentLength": "262144"}, target="iqn.2026-01.org.vtl-ebm:vtl")
        for _ in range(20):  # the drive reports the load first
            if scsi_status(ini.collect(ini.scsi(bytes(6), lun=1))[0]) == 0:
                break
        assert scsi_status(ini.write(WRITE6, pattern(16 << 10))) == 0  # A holds the lease
        holder.send_signal(signal.SIGSTOP)  # cut off: no renewal, no write
        try:
            deadline = time.monotonic() + TTL * 10  # (a loaded machine: slow attempts)
            while (r := vtl(b, ceph, "cartridge", "import", "--from", "s3", BC)).exit_code:
                assert "in use by gateway gw-a" in r.stderr, r.output
                assert time.monotonic() < deadline, "the paused holder's lease never lapsed"
                time.sleep(0.3)
            newer = blocks_of(6, 6)
            write_tape_files(b, BC, [newer])
            assert vtl(b, ceph, "cartridge", "archive", BC).exit_code == 0  # generation 3
        finally:
            holder.send_signal(signal.SIGCONT)
        rsp = ini.write(WRITE6, pattern(16 << 10))  # the holder's late write
        sense = sense_of(rsp)
        assert scsi_status(rsp) == 2 and (sense[2] & 0xF, sense[12]) == (7, 0x27), sense.hex()
    finally:
        ini.close()
        holder.terminate()
        holder.wait(30)
    with Library.open(a) as lib:
        lib.unload(0)
    r = vtl(a, ceph, "cartridge", "archive", BC)  # its copy is stale
    assert r.exit_code == 2 and "lost" in r.stderr and "stale" in r.stderr, r.output

    # An archive the old holder got up after its last renewal: newer id, old generation.
    client = ceph.client()
    current = archives.latest_archive(client, "shared", "fence", BC)
    manifest = archives.read_manifest(client, current)
    assert manifest["generation"] == 3
    late = current.rsplit("/", 1)[0] + "/99991231T235959Zffff"
    archives._put_manifest(client, "shared", late.split("/", 3)[3],
                           {**manifest, "url": late, "generation": 2}, None)
    assert archives.latest_archive(client, "shared", "fence", BC) == current
    assert remote(b, ceph)[BC]["archive"] == current

    r = vtl(a, ceph, "cartridge", "import", "--from", "s3", BC)  # the current one
    assert r.exit_code == 0, r.output
    assert read(a, BC) == newer
    assert vtl(a, ceph, "cartridge", "archive", BC).exit_code == 0  # generation 4
    assert len(archives.archives_of(client, "shared", "fence", BC)) == 1  # the late one went
    assert vtl(b, ceph, "cartridge", "retrieve", BC).exit_code == 0
    assert read(b, BC) == newer


def test_a_lost_catalog_is_rebuilt_with_the_buckets_cartridges(ceph, tmp_path: Path) -> None:
    a, b = two_gateways(tmp_path, ceph, "rebuild", 60)  # no vtl serve renews
    others, mine, local = "C00001L8", "C00002L8", "C00003L8"
    for barcode in (others, mine, local):
        assert vtl(a, ceph, "cartridge", "create", barcode, "--capacity", "64MiB").exit_code == 0
    write_tape_files(a, others, [blocks_of(7, 6)])
    for args in (("archive", others), ("archive", mine), ("retrieve", mine)):
        assert vtl(a, ceph, "cartridge", *args).exit_code == 0, args
    assert vtl(b, ceph, "cartridge", "import", "--from", "s3", others).exit_code == 0
    assert vtl(b, ceph, "cartridge", "archive", others).exit_code == 0
    assert vtl(b, ceph, "cartridge", "retrieve", others).exit_code == 0  # B holds it now

    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (a / name).unlink(missing_ok=True)  # A's catalog is lost
    r = vtl(a, ceph, "catalog", "rebuild", "--from-bucket")
    assert r.exit_code == 0, r.output
    where = json.loads(r.stdout)["cartridges"]
    assert where[others].startswith("s3://shared/rebuild/tapes/C00001L8/")
    assert "(lease: gw-b until" in where[others]
    listed = {row["barcode"]: row for row in json.loads(
        vtl(a, ceph, "cartridge", "list").stdout)}
    assert listed[others]["location"].startswith("s3://")  # archived, in the bucket
    assert not listed[mine]["location"].startswith("s3://")  # local: A holds its lease
    assert json.loads(vtl(a, ceph, "cartridge", "show", mine).stdout)["lease"] == "gw-a"
    assert not listed[local]["location"].startswith("s3://")  # made here, never archived
    r = vtl(a, ceph, "cartridge", "retrieve", others)  # the row is a real one, and B's
    assert r.exit_code == 2 and "in use by gateway gw-b" in r.stderr, r.output
