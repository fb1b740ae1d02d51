"""Where a library's object store is and how to reach it: the ``[s3]`` table of library.toml,
completed from the environment.

Example::

    [s3]
    location = "s3://vault/lib1"        # bucket and prefix for archived cartridges and chunks
    endpoint = "http://10.0.0.5:7480"   # absent: $VTL_S3_ENDPOINT, else AWS
    access_key_id = "..."               # absent: $AWS_ACCESS_KEY_ID (or boto3's own lookup)
    secret_access_key = "..."           # absent: $AWS_SECRET_ACCESS_KEY
    part_size = 16777216                # multipart part size (at least 5 MiB)
    worm_lock = "compliance"            # object lock for WORM cartridges ("" = none)
    worm_retention_days = 3650
    gateway = "gw-a"                    # set: this library is one gateway of several sharing
                                        # the bucket (leases, vtl/leases.py); absent: it owns it
    lease_ttl = 60                      # seconds a gateway's lease on a cartridge lasts unrenewed
    upload = "auto"                     # a dedup library's chunks go to the bucket after each
                                        # sync point (vtl/s3_uploader.py); "manual" (the
                                        # default): only 'vtl store push' sends them
    cache_size = 4294967296             # bytes of packs kept locally once the bucket has them
                                        # (least recently used go first); 0: no limit

Keys never need to be on a command line: a setting absent from the file comes from the
environment. This module imports nothing heavy; :meth:`S3Settings.client` imports boto3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vtl.errors import LibraryError

MIN_PART = 5 << 20
LOCK_MODES = ("", "governance", "compliance")
UPLOAD_MODES = ("manual", "auto")
_INTEGERS = ("part_size", "worm_retention_days", "lease_ttl", "cache_size")


class S3SettingsError(LibraryError):
    """An [s3] setting that cannot be used; one line naming it."""


def split_location(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; S3SettingsError for anything else."""
    if not isinstance(url, str) or not url.startswith("s3://") or not url[5:].split("/")[0]:
        raise S3SettingsError(f"not an S3 location: {url!r} (expected s3://BUCKET/PREFIX)")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


@dataclass
class S3Settings:
    location: str = ""
    endpoint: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    part_size: int = 16 << 20
    worm_lock: str = ""
    worm_retention_days: int = 0
    gateway: str = ""
    lease_ttl: int = 60
    upload: str = "manual"
    cache_size: int = 0

    def validate(self) -> S3Settings:
        for f in fields(self):
            value = getattr(self, f.name)
            want = int if f.name in _INTEGERS else str
            if not isinstance(value, want) or isinstance(value, bool):
                raise S3SettingsError(f"s3.{f.name} must be {'an integer' if want is int else 'a string'}")
        if self.location:
            split_location(self.location)
        if self.part_size < MIN_PART:
            raise S3SettingsError(f"s3.part_size must be at least {MIN_PART} (5 MiB)")
        if self.worm_lock not in LOCK_MODES:
            raise S3SettingsError(f"s3.worm_lock must be governance, compliance or empty, "
                                  f"not {self.worm_lock!r}")
        if self.upload not in UPLOAD_MODES:
            raise S3SettingsError(f"s3.upload must be auto or manual, not {self.upload!r}")
        if self.cache_size < 0:
            raise S3SettingsError("s3.cache_size must be 0 (no limit) or a number of bytes")
        if self.lease_ttl < 1:
            raise S3SettingsError("s3.lease_ttl must be at least 1 (seconds)")
        if self.gateway and not all(c.isalnum() or c in "-_.:@" for c in self.gateway):
            raise S3SettingsError(f"s3.gateway must be letters, digits and -_.:@, not "
                                  f"{self.gateway!r}")
        if self.worm_lock and self.worm_retention_days <= 0:
            raise S3SettingsError("s3.worm_lock needs a positive s3.worm_retention_days")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The non-default settings (an empty table is left out of library.toml)."""
        default = S3Settings()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_dict(cls, doc: Any) -> S3Settings:
        if not isinstance(doc, dict):
            raise S3SettingsError("[s3] must be a table")
        known = {f.name for f in fields(cls)}
        for key in doc:
            if key not in known:
                raise S3SettingsError(f"unknown setting s3.{key!r}")
        return cls(**doc).validate()

    # ---- use ------------------------------------------------------------------------------
    def target(self, location: str | None = None) -> tuple[str, str]:
        """(bucket, prefix): ``location`` if given, else the configured one."""
        url = location or self.location or os.environ.get("VTL_S3_LOCATION", "")
        if not url:
            raise S3SettingsError("no S3 location: set location in the [s3] table of "
                                  "library.toml (or $VTL_S3_LOCATION)")
        return split_location(url)

    def client(self, endpoint: str | None = None) -> Any:
        """A boto3 S3 client: endpoint and keys from these settings, else the environment."""
        try:
            import boto3
        except ImportError:
            raise S3SettingsError("the S3 tier needs boto3 (pip install 'vtl-ebm[s3]')") from None
        env = os.environ
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint or self.endpoint or env.get("VTL_S3_ENDPOINT") or None,
            "region_name": self.region or env.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
        if self.access_key_id:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = self.secret_access_key
        return boto3.client("s3", config=_client_config(), **kwargs)


def _client_config() -> Any:
    """Checksums only where S3 requires them: every PUT here carries its Content-MD5
    already, and botocore >= 1.36 would add a CRC32 of each body on top (about a fifth of
    a small chunk PUT's CPU, measured against radosgw: bench/bench_s3_cache.py). For the
    same reason the body is not hashed again into the request's signature (SigV4's
    payload SHA-256, which botocore computes over plain http): the signature covers the
    headers, Content-MD5 among them, so a changed body is still refused."""
    from botocore.config import Config

    unsigned = {"payload_signing_enabled": False}
    try:
        return Config(request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", s3=unsigned)
    except TypeError:  # an older botocore: it adds no checksums of its own
        return Config(s3=unsigned)


def attach_chunk_remote(store_root: Path, settings: S3Settings,
                        library_root: Path | None = None) -> None:
    """Let reads of a dedup library fetch the chunks its local store lacks from the bucket
    (ranged GETs of its pack objects, tape_formats/store/s3_packs.py), with read-ahead; the
    client is made at the first miss. With
    ``library_root`` (a process that may write) and ``upload = "auto"``, chunks made durable
    in this process are uploaded by the library's uploader (vtl/s3_uploader.py), which also
    finishes what a crash left pending."""
    import sqlite3

    from tape_formats.store.chunk_store import attach_remote
    from tape_formats.store.s3_cache import CacheState
    from tape_formats.store.s3_tier import S3ChunkRemote

    bucket, prefix = settings.target()
    try:
        state: CacheState | None = CacheState(store_root)
    except sqlite3.Error:  # a reader who may not write the store: fetches go unrecorded
        state = None
    on_synced = None
    if library_root is not None and settings.upload == "auto":
        from vtl.s3_uploader import uploader_for

        on_synced = uploader_for(library_root, store_root, settings).synced
    attach_remote(store_root, S3ChunkRemote(settings.client, bucket, prefix,
                                            state=state, on_synced=on_synced))
