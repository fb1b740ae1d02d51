"""``vtl store ...``: a dedup library's chunk store: what it saves, and freeing what no
cartridge references any more (tape_formats/store, docs/store-format.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vtl.cli.common import console, emit_json, open_library, say, settings
from vtl.cli.errors import CliError
from vtl.cli.formatting import human_size

app = typer.Typer(help="The chunk store of a dedup library (stats, garbage collection, S3 "
                       "push/pull) and settling interrupted archives.",
                  no_args_is_help=True)


def register(root_app: typer.Typer) -> None:
    root_app.add_typer(app, name="store")


def _store_dirs(lib: Any) -> tuple[Any, Path]:
    """(ChunkStore, cartridge folder) of a dedup library; refused for a plain one."""
    from tape_formats.store.chunk_store import ChunkStore
    from vtl.inventory import chunk_store_of
    from vtl.library import CARTRIDGE_DIR

    root = chunk_store_of(lib)
    if root is None:
        raise CliError(f"library {lib.root} stores plain cartridge files (vtl init --store "
                       "dedup makes a dedup library)")
    return ChunkStore(root), lib.root / CARTRIDGE_DIR


@app.command()
def stats() -> None:
    """Logical bytes on the cartridges against bytes stored: dedup and compression ratios."""
    from tape_formats.store.gc import stats as store_stats

    with open_library(readonly=True) as lib:
        store, cartridges = _store_dirs(lib)
        s = store_stats(store, cartridges)
        tier = _tier_stats(lib, store)
        store.close()
    data = {"cartridges": s.cartridges, "logical_bytes": s.logical_bytes,
            "unique_bytes": s.unique_bytes, "stored_bytes": s.stored_bytes,
            "chunks": s.chunks, "stored_chunks": s.stored_chunks, "packs": s.packs,
            "dedup_ratio": round(s.dedup_ratio, 3),
            "compression_ratio": round(s.compression_ratio, 3),
            "total_ratio": round(s.total_ratio, 3), **tier}
    if settings().json:
        emit_json(data)
        return
    console().print(
        f"{s.cartridges} cartridge(s): {human_size(s.logical_bytes)} logical, "
        f"{human_size(s.unique_bytes)} distinct in {s.chunks} chunk(s), "
        f"{human_size(s.stored_bytes)} stored ({s.stored_chunks} chunk(s) in {s.packs} "
        "pack(s))\n"
        f"dedup {s.dedup_ratio:.2f}x, compression {s.compression_ratio:.2f}x, "
        f"total {s.total_ratio:.2f}x", markup=False)
    if tier:
        limit = human_size(tier["cache_size"]) if tier["cache_size"] else "no limit"
        console().print(
            f"local {human_size(tier['local_bytes'])} (cache size {limit}, "
            f"{human_size(tier['pending_bytes'])} not in the bucket yet); bucket "
            f"{human_size(tier['bucket_bytes'])} in {tier['bucket_chunks']} chunk(s), "
            f"{tier['bucket_packs']} pack object(s); "
            f"uploads {tier['upload']}", markup=False)


def _tier_stats(lib: Any, store: Any) -> dict[str, Any]:
    """Local against bucket bytes of a library with an [s3] location (else nothing): the
    packs on disk, those not uploaded yet, and the chunks and pack objects known to be in
    the bucket (this library's uploads, fetches and the manifests it read, not a LIST)."""
    from tape_formats.store.s3_cache import STATE_NAME, CacheState, cache_report

    s3 = lib.config.s3
    if not s3.location:
        return {}
    data = {"upload": s3.upload, "cache_size": s3.cache_size, "local_bytes": 0,
            "pending_bytes": 0, "bucket_chunks": 0, "bucket_bytes": 0, "bucket_packs": 0}
    if not (store.root / STATE_NAME).exists():  # nothing uploaded by the uploader yet
        data["local_bytes"] = data["pending_bytes"] = cache_report(store, None).local_bytes
        return data
    state = CacheState(store.root)
    try:
        cache = cache_report(store, state)
        data["bucket_chunks"], data["bucket_bytes"] = state.bucket_bytes()
        data["bucket_packs"] = state.bucket_packs()
    finally:
        state.close()
    data["local_bytes"], data["pending_bytes"] = cache.local_bytes, cache.pending_bytes
    return data


@app.command()
def gc(
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for cartridges being written to reach a filemark.")] = 30.0,
    bucket: Annotated[bool, typer.Option(
        "--bucket", help="Collect the pack objects of the library's [s3] location instead: "
                         "those holding no chunk an archive manifest or a library's "
                         "reference list (every gateway's) names, older than --grace; "
                         "mostly dead ones are rewritten.")] = False,
    grace: Annotated[float, typer.Option(
        help="With --bucket: pack objects younger than this many seconds stay.")] = 3600.0,
) -> None:
    """Free the chunks no cartridge references (after erase, relabel, delete)."""
    from tape_formats.store.chunk_store import StoreBusy
    from tape_formats.store.gc import collect

    if bucket:
        _gc_bucket(grace)
        return
    with open_library() as lib:
        store, cartridges = _store_dirs(lib)
        try:
            r = collect(store, cartridges, timeout=timeout)
        except StoreBusy as exc:
            raise CliError(str(exc)) from None
    say(f"freed {r.chunks_freed} chunk(s), {human_size(r.bytes_freed)}; kept {r.chunks_kept}; "
        f"packs removed {r.packs_removed}, compacted {r.packs_compacted} ({r.packs_merged} "
        "small ones merged)",
        {"chunks_freed": r.chunks_freed, "bytes_freed": r.bytes_freed,
         "chunks_kept": r.chunks_kept, "temporaries_freed": r.temporaries_freed,
         "packs_removed": r.packs_removed, "packs_compacted": r.packs_compacted,
         "packs_merged": r.packs_merged})


def _local_ids(lib: Any) -> set[bytes]:
    """The chunk ids this library's own recipes name (none for a plain library)."""
    from tape_formats.store.gc import referenced

    if lib.config.store != "dedup":
        return set()
    store, cartridges = _store_dirs(lib)
    return set(referenced(cartridges, store))


def _gc_bucket(grace: float) -> None:
    from dataclasses import asdict

    from vtl.bucket_gc import collect, library_name
    from vtl.cli.s3_access import object_store

    if grace < 0:
        raise CliError("--grace must be at least 0 seconds")
    with open_library(readonly=True) as lib, object_store(lib, None) as (client, bucket,
                                                                         prefix):
        r = collect(client, bucket, prefix, library_name(lib.config.s3.gateway, lib.root),
                    local_ids=_local_ids(lib), grace=grace)
    say(f"deleted {r.packs_deleted} pack object(s) and {r.chunks_deleted} chunk(s), "
        f"{human_size(r.bytes_deleted)}; kept {r.chunks_kept} chunk(s) in {r.packs_kept} pack "
        f"object(s) named by {r.archives} archive(s) and {r.reference_lists} reference "
        f"list(s); {r.packs_rewritten} pack(s) rewritten without their dead chunks, "
        f"{r.packs_mostly_dead} mostly dead kept ({human_size(r.bytes_dead_in_kept)} dead in "
        f"them); {r.packs_young + r.chunks_young} object(s) younger than {grace:g} s, "
        f"{r.packs_locked + r.chunks_locked} locked", asdict(r))


EndpointOpt = Annotated[str | None, typer.Option(
    help="S3 endpoint URL (default: library.toml's [s3] endpoint, else $VTL_S3_ENDPOINT, "
         "else AWS); keys from [s3] or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")]
LocationArg = Annotated[str | None, typer.Argument(
    metavar="[s3://BUCKET/PREFIX]", help="Default: location in library.toml's [s3].")]


@app.command()
def push(
    location: LocationArg = None,
    endpoint: EndpointOpt = None,
    evict: Annotated[bool, typer.Option(
        "--evict", help="Then delete the local copies: reads fetch them back on demand "
                        "(only to the library's own [s3] location).")] = False,
) -> None:
    """Copy the store's chunks to an S3 bucket (conditional: a chunk there is not resent),
    then the list of chunks this library's cartridges name (so 'gc --bucket' keeps them)."""
    from tape_formats.store.gc import referenced
    from tape_formats.store.s3_tier import evict as evict_chunks
    from tape_formats.store.s3_tier import push as push_chunks
    from vtl.bucket_gc import library_name, put_references, uploading
    from vtl.cli.s3_access import object_store

    with open_library(readonly=not evict) as lib, object_store(
            lib, location, endpoint=endpoint) as (client, bucket, prefix):
        if evict and (bucket, prefix) != lib.config.s3.target():
            raise CliError("--evict needs the library's own [s3] location (reads fetch "
                           "evicted chunks from there)")
        store, cartridges = _store_dirs(lib)
        who = library_name(lib.config.s3.gateway, lib.root)
        with uploading(client, bucket, prefix, who):  # no bucket collection meanwhile
            r = push_chunks(store, client, bucket, prefix)
            put_references(client, bucket, prefix, who, referenced(cartridges, store))
        files, freed = evict_chunks(store, r.in_bucket) if evict else (0, 0)
    say(f"uploaded {r.uploaded} chunk(s), {human_size(r.bytes_uploaded)}; {r.already_there} "
        "already there" + (f"; evicted {files} local cop(ies), {human_size(freed)}"
                           if evict else ""),
        {"uploaded": r.uploaded, "bytes_uploaded": r.bytes_uploaded,
         "already_there": r.already_there, "evicted": files, "bytes_evicted": freed})


@app.command()
def pull(
    location: LocationArg = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Fetch from an S3 bucket every chunk a cartridge references and the store lacks."""
    from tape_formats.store.gc import referenced
    from tape_formats.store.s3_tier import pull as pull_chunks
    from vtl.cli.s3_access import object_store

    with open_library() as lib, object_store(lib, location, endpoint=endpoint) as (
            client, bucket, prefix):
        store, cartridges = _store_dirs(lib)
        n = pull_chunks(store, client, bucket, prefix, referenced(cartridges, store))
    say(f"fetched {n} chunk(s)", {"fetched": n})


@app.command()
def settle(endpoint: EndpointOpt = None) -> None:
    """Finish or roll back cartridge archives and retrievals a crash interrupted (the next
    'vtl cartridge archive' or 'retrieve' does this too)."""
    from vtl import archive as archives
    from vtl.cli.s3_access import object_store

    with open_library() as lib:
        if not archives.pending(lib):
            say("nothing to settle", {"completed": [], "rolled_back": []})
            return
        with object_store(lib, None, endpoint=endpoint, need_location=False) as (client, _b, _p):
            r = archives.settle(lib, client)
    say(f"completed {', '.join(r.completed) or 'none'}; rolled back "
        f"{', '.join(r.rolled_back) or 'none'}",
        {"completed": r.completed, "rolled_back": r.rolled_back})
