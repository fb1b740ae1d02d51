"""Pack objects: how a chunk store's chunks sit in an S3 bucket (docs/store-format.md).

A *pack object* ``<prefix>/packs/<16 hex>`` holds many chunks as records in the local pack
encoding (pack.py: header with the chunk id, flag byte and stored bytes, CRC32C), so a
byte range of it proves on arrival which chunk it is and that it is whole. Its *manifest*
``<prefix>/manifests/<same 16 hex>`` is put after it (so a manifest always names a pack
that is there): ``VPM1``, the record count, the pack's size, then per record the chunk id,
its offset in the pack, its stored length and flag. Any gateway maps a chunk id to (pack,
byte range) from the manifests it has read (a table kept by s3_cache.CacheState, or in
memory) and fetches it, and the chunks next to it, with one ranged GET. Both are put with
Content-MD5 and ``If-None-Match: *`` (multipart with the configured part size when larger
than one part), and the ETag the store answers is checked against the MD5 sent
(s3_objects.put_bytes/put_file).

Stores written before packs put one object per chunk, ``<prefix>/chunks/<hex>`` (body: the
stored bytes); a chunk no manifest names is still looked for there (``legacy_key``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tape_formats.store import pack as packs
from tape_formats.store.s3_objects import DEFAULT_PART, error_code, put_bytes, put_file

PACKS = "packs"
MANIFESTS = "manifests"
LEGACY_CHUNKS = "chunks"
PACK_TARGET = 8 << 20  # bytes of records per pack object (a pass's last one is smaller)
MAX_RANGE = 4 << 20  # adjacent records fetched with one ranged GET
MAGIC = b"VPM1"
_HEAD = struct.Struct("<4sIQ")  # magic, records, pack size
_ENTRY = struct.Struct("<32sQIB")  # chunk id, record offset, stored length, flag


class PackObjectError(ValueError):
    """A manifest or a fetched range that is not what it should be."""


@dataclass(frozen=True, slots=True)
class Where:
    """A chunk's record in a pack object: its byte range is [offset, offset + size)."""

    pack: str
    offset: int
    stored: int  # flag byte and payload, as ChunkStore.read_stored returns them

    @property
    def size(self) -> int:
        return packs.record_size(self.stored - 1)


def _key(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), *parts) if p)


def pack_key(prefix: str, pack: str) -> str:
    return _key(prefix, PACKS, pack)


def manifest_key(prefix: str, pack: str) -> str:
    return _key(prefix, MANIFESTS, pack)


def legacy_key(prefix: str, chunk_id: bytes) -> str:
    """The object of one chunk as stores before pack objects put it."""
    return _key(prefix, LEGACY_CHUNKS, chunk_id.hex())


def collected_key(prefix: str) -> str:
    """The object a bucket collection rewrites after it removed pack objects."""
    return _key(prefix, "gc", "collected")


def collected_mark(client: Any, bucket: str, prefix: str) -> str:
    """The ETag of the last collection's mark ('' before any): when it changes, packs a
    gateway knows may be gone."""
    try:
        return str(client.head_object(Bucket=bucket, Key=collected_key(prefix))["ETag"])
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return ""
        raise


def new_pack_name() -> str:
    return os.urandom(8).hex()


# ---- manifests ----------------------------------------------------------------------------------
def encode_manifest(size: int, rows: Sequence[tuple[bytes, int, int, int]]) -> bytes:
    """``rows``: (chunk id, offset, stored length, flag) of each record of a pack object."""
    return _HEAD.pack(MAGIC, len(rows), size) + b"".join(_ENTRY.pack(*r) for r in rows)


def decode_manifest(pack: str, body: bytes) -> list[tuple[bytes, Where]]:
    if len(body) < _HEAD.size:
        raise PackObjectError(f"manifest of pack {pack} is cut short")
    magic, n, _size = _HEAD.unpack_from(body)
    if magic != MAGIC or len(body) != _HEAD.size + n * _ENTRY.size:
        raise PackObjectError(f"manifest of pack {pack} is damaged")
    return [(cid, Where(pack, offset, stored))
            for cid, offset, stored, _flag in _ENTRY.iter_unpack(body[_HEAD.size:])]


# ---- uploads --------------------------------------------------------------------------------------
Record = tuple[bytes, int, bytes | memoryview]  # chunk id, flag, stored payload (no flag byte)


def split(records: Sequence[Record], target: int | None = None) -> list[slice]:
    """Where to cut ``records`` into groups of about equal size, each near ``target``
    (default PACK_TARGET) bytes at most: a slice of ``records`` per group."""
    target = target or PACK_TARGET
    sizes = [packs.record_size(len(r[2])) for r in records]
    n = max(1, -(-sum(sizes) // target))
    each = -(-sum(sizes) // n)
    out, start, size = [], 0, 0
    for i, n_bytes in enumerate(sizes):
        if size >= each:
            out.append(slice(start, i))
            start, size = i, 0
        size += n_bytes
    if start < len(records):
        out.append(slice(start, len(records)))
    return out


def put_pack(client: Any, bucket: str, prefix: str, records: Sequence[Record], *,
             part_size: int = DEFAULT_PART, lock: Any = None,
             encoded: Sequence[bytes | memoryview] | None = None) -> list[tuple[bytes, Where]]:
    """One pack object of ``records``, then its manifest; returns where each chunk now is.
    ``encoded``: the records already in the pack encoding, as a local pack holds them (so
    they are sent as they are, not encoded again)."""
    name = new_pack_name()
    bufs: list[bytes | memoryview] = []
    rows, at = [], 0
    for cid, flag, body in records:
        if encoded is None:
            bufs += packs.encode(cid, flag, body)
        rows.append((cid, at, 1 + len(body), flag))
        at += packs.record_size(len(body))
    data = b"".join(encoded if encoded is not None else bufs)
    if len(data) != at:
        raise PackObjectError(f"pack {name}: {len(data)} bytes encoded for {at}")
    key = pack_key(prefix, name)
    if len(data) <= part_size:
        put_bytes(client, bucket, key, data, lock, quick=True, IfNoneMatch="*")
    else:
        put_file(client, bucket, key, lambda o, n: data[o:o + n], len(data),
                 part_size=part_size, lock=lock)
    put_bytes(client, bucket, manifest_key(prefix, name), encode_manifest(len(data), rows),
              lock, quick=True, IfNoneMatch="*")
    return [(cid, Where(name, offset, stored)) for cid, offset, stored, _flag in rows]


# ---- reads ----------------------------------------------------------------------------------------
def list_manifests(client: Any, bucket: str, prefix: str) -> list[str]:
    """The pack names every manifest in the bucket gives."""
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=_key(prefix, MANIFESTS) + "/"):
        names += [o["Key"].rsplit("/", 1)[1] for o in page.get("Contents", [])]
    return names


def read_manifest(client: Any, bucket: str, prefix: str, pack: str
                  ) -> list[tuple[bytes, Where]] | None:
    """A pack's chunks from its manifest (None: deleted meanwhile by a collection)."""
    try:
        body = client.get_object(Bucket=bucket, Key=manifest_key(prefix, pack))["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return decode_manifest(pack, body)


def read_all(client: Any, bucket: str, prefix: str) -> dict[str, list[tuple[bytes, Where]]]:
    """Every pack object's chunks, by pack name, as its manifest gives them."""
    out = {}
    for name in list_manifests(client, bucket, prefix):
        found = read_manifest(client, bucket, prefix, name)
        if found is not None:
            out[name] = found
    return out


def runs(found: Iterable[tuple[bytes, Where]], limit: int = MAX_RANGE
         ) -> list[list[tuple[bytes, Where]]]:
    """Chunks grouped into runs of records adjacent in one pack object (one ranged GET
    each), at most ``limit`` bytes a run."""
    out: list[list[tuple[bytes, Where]]] = []
    for cid, w in sorted(found, key=lambda f: (f[1].pack, f[1].offset)):
        if out:
            last = out[-1][-1][1]
            start = out[-1][0][1].offset
            if (last.pack == w.pack and last.offset + last.size == w.offset
                    and w.offset + w.size - start <= limit):
                out[-1].append((cid, w))
                continue
            if last.pack == w.pack and last.offset == w.offset:
                continue  # the same record twice
        out.append([(cid, w)])
    return out


def get_run(client: Any, bucket: str, prefix: str, run: Sequence[tuple[bytes, Where]]
            ) -> dict[bytes, bytes] | None:
    """The stored bytes of a run's chunks, with one ranged GET, each record checked (id,
    CRC); None when the pack object is gone (collected since its manifest was read)."""
    start = run[0][1].offset
    end = run[-1][1].offset + run[-1][1].size
    pack = run[0][1].pack
    try:
        buf = client.get_object(Bucket=bucket, Key=pack_key(prefix, pack),
                                Range=f"bytes={start}-{end - 1}")["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "InvalidRange", "416"):
            return None
        raise
    if len(buf) != end - start:
        raise PackObjectError(f"pack {pack}: got {len(buf)} bytes of {end - start}")
    out = {}
    for cid, w in run:
        try:
            flag, body = packs.decode(buf, w.offset - start, cid)
        except packs.PackDamaged as exc:
            raise PackObjectError(f"chunk {cid.hex()} in pack {pack}: {exc}") from None
        out[cid] = b"".join((bytes((flag,)), body))
    return out


def get_legacy(client: Any, bucket: str, prefix: str, chunk_id: bytes) -> bytes | None:
    """A chunk of the per-chunk layout (None: not there either)."""
    try:
        return client.get_object(Bucket=bucket, Key=legacy_key(prefix, chunk_id)
                                 )["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise


class LocationTable(Protocol):
    """Where a ChunkMap keeps what it learnt (s3_cache.CacheState)."""

    def locate(self, ids: Sequence[bytes]) -> dict[bytes, Where]: ...

    def add_locations(self, found: Sequence[tuple[bytes, Where]],
                      manifest: str | None = None) -> None: ...

    def manifests_seen(self) -> set[str]: ...

    def drop_pack(self, pack: str) -> None: ...


class ChunkMap:
    """Chunk id -> where it is in the bucket: the manifests read so far, kept in ``table``
    or, without one, in memory. ``refresh`` reads the manifests not seen yet."""

    def __init__(self, table: LocationTable | None = None) -> None:
        self._table = table
        self._mem: dict[bytes, Where] = {}
        self._seen: set[str] = set()

    def locate(self, ids: Sequence[bytes]) -> dict[bytes, Where]:
        if self._table is not None:
            return self._table.locate(ids)
        return {cid: w for cid in ids if (w := self._mem.get(cid)) is not None}

    def add(self, found: Sequence[tuple[bytes, Where]], manifest: str | None = None) -> None:
        if self._table is not None:
            self._table.add_locations(found, manifest)
        else:
            self._mem.update(found)
            if manifest is not None:
                self._seen.add(manifest)

    def drop_pack(self, pack: str) -> None:
        if self._table is not None:
            self._table.drop_pack(pack)
        else:
            self._mem = {c: w for c, w in self._mem.items() if w.pack != pack}
            self._seen.discard(pack)

    def refresh(self, client: Any, bucket: str, prefix: str, *, forget: bool = False,
                again: bool = False) -> int:
        """Read the manifests not read before; returns how many. With ``forget``, first
        forget the packs whose manifest is gone (collected); with ``again``, read every
        manifest again (a pack found gone whose chunks a collection moved to a pack read
        before: it ran while this map was refreshed)."""
        seen = self._table.manifests_seen() if self._table is not None else set(self._seen)
        names = list_manifests(client, bucket, prefix)
        if forget:
            for gone in seen - set(names):
                self.drop_pack(gone)
        if again:
            seen = set()
        n = 0
        for name in names:
            if name in seen:
                continue
            found = read_manifest(client, bucket, prefix, name)
            if found is not None:
                self.add(found, name)
                n += 1
        return n


def fetch_many(client: Any, bucket: str, prefix: str, chunk_map: ChunkMap,
               ids: Sequence[bytes], *, refreshed: Callable[[], bool] | None = None,
               counted: Callable[[int], None] | None = None) -> dict[bytes, bytes]:
    """The stored bytes of those of ``ids`` the bucket holds: ranged GETs of pack objects
    (adjacent records coalesced), the manifests read again for ids not known (``refreshed``
    says whether to: a caller may limit how often), the per-chunk layout last.
    ``counted(n)`` is told of each GET that brought ``n`` chunks."""
    out: dict[bytes, bytes] = {}
    for attempt in range(2):
        want = [cid for cid in ids if cid not in out]
        found = chunk_map.locate(want)
        if attempt == 1 or (len(found) < len(want) and (refreshed is None or refreshed())):
            chunk_map.refresh(client, bucket, prefix)
            found = chunk_map.locate(want)
        if attempt == 1 and len(found) < len(want):
            chunk_map.refresh(client, bucket, prefix, again=True)
            found = chunk_map.locate(want)
        gone = False
        for run in runs(found.items()):
            got = get_run(client, bucket, prefix, run)
            if got is None:
                chunk_map.drop_pack(run[0][1].pack)
                gone = True
            else:
                out.update(got)
                if counted is not None:
                    counted(len(got))
        if not gone:
            break
    for cid in ids:
        if cid not in out and (body := get_legacy(client, bucket, prefix, cid)) is not None:
            out[cid] = body
            if counted is not None:
                counted(1)
    return out
