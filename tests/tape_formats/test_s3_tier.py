"""The chunk store's S3 tier against a real single-node Ceph radosgw (started here, on
127.0.0.1, stopped by pid): conditional uploads, and a cartridge read back after its local
chunks were dropped and fetched from the bucket."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_cluster import running

from tape_formats.cartridge import RecordKind, TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.store import recipe as recipes
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.medium import recipe_path
from tape_formats.store.s3_tier import pull, push

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with running(tmp_path_factory.mktemp("ceph")) as cluster:
        client = cluster.client()
        client.create_bucket(Bucket="vtl")
        yield client


def test_radosgw_refuses_a_second_conditional_put(s3) -> None:
    s3.put_object(Bucket="vtl", Key="probe", Body=b"one", IfNoneMatch="*")
    with pytest.raises(s3.exceptions.ClientError) as info:
        s3.put_object(Bucket="vtl", Key="probe", Body=b"two", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket="vtl", Key="probe")["Body"].read() == b"one"


def test_chunks_pushed_then_pulled_read_back(s3, tmp_path: Path) -> None:
    carts = tmp_path / "cartridges"
    carts.mkdir()
    path = carts / "S00001L8.vtape"
    TapeCartridge.create(path, "S00001L8", MEDIA["LTO-8"], capacity=64 << 20,
                         chunk_store=tmp_path / "store")
    rng = random.Random(3)
    blocks = [rng.randbytes(rng.randrange(1, 150_000)) for _ in range(20)]
    with TapeCartridge.open(path) as c:
        for b in blocks:
            c.write_block(b)
        c.write_filemarks(1)
    store = ChunkStore(tmp_path / "store")
    first = push(store, s3, "vtl", "lib1")
    assert first.uploaded > 0 and first.already_there == 0
    again = push(store, s3, "vtl", "lib1")  # conditional: nothing is sent twice
    assert again.uploaded == 0 and again.already_there == first.uploaded
    store.discard(list(store.ids()))  # the local cache is dropped
    ids = recipes.load(recipe_path(path)).ch_ids
    assert pull(store, s3, "vtl", "lib1", ids) == len(set(ids))
    with TapeCartridge.open(path, readonly=True) as c:
        got = []
        while (r := c.read_block()).kind is not RecordKind.EOD:
            if r.kind is RecordKind.DATA:
                got.append(bytes(r.data))
    assert got == blocks
