"""Checked transfers of whole objects to and from an S3 bucket: what an archived cartridge is
made of.

An upload is multipart once it is larger than one part (S3's minimum part is 5 MiB): each
part is sent with its ``Content-MD5``, so the store refuses a part damaged on the way
(``BadDigest``), and after completion the object's size and ETag (the MD5 of the parts' MD5s
and ``-N``; the plain MD5 for a single PUT) are compared with what was sent. A failed
upload is aborted, so no incomplete upload is left behind by an error; one left by a crash
is found and aborted by :func:`abort_incomplete`. A download goes to a temporary file,
hashed (BLAKE3) on the way, and is accepted only when size and hash match the expected ones.
This module knows nothing of cartridges or libraries.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import blake3

MIN_PART = 5 << 20  # S3's smallest part (but the last)
DEFAULT_PART = 16 << 20


class TransferError(OSError):
    """An upload or download that did not arrive whole; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """S3 object lock for the objects of a WORM cartridge: mode and retain-until date."""

    mode: str  # "GOVERNANCE" or "COMPLIANCE"
    until: datetime

    def put_args(self) -> dict[str, Any]:
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": self.until}


@dataclass(frozen=True, slots=True)
class Uploaded:
    key: str
    size: int
    etag: str
    blake3: str


def _md5_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def md5_b64(data: bytes) -> str:
    """The Content-MD5 header value of ``data``."""
    return _md5_b64(hashlib.md5(data).digest())


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def put_bytes(client: Any, bucket: str, key: str, data: bytes,
              lock: ObjectLock | None = None, *, quick: bool = False,
              **extra: Any) -> Uploaded:
    """One PUT with Content-MD5; size and ETag checked after (a HEAD). ``quick`` (the
    objects of a chunk store, many a GB): the ETag the PUT answered is checked instead of
    a HEAD's, and no BLAKE3 is computed (``blake3`` is empty)."""
    digest = hashlib.md5(data).digest()
    r = client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=_md5_b64(digest),
                          **(lock.put_args() if lock else {}), **extra)
    if quick:
        if r["ETag"].strip('"') != digest.hex():
            raise TransferError(f"s3://{bucket}/{key}: the store's ETag {r['ETag']} is not "
                                f"the MD5 sent ({digest.hex()})")
        return Uploaded(key, len(data), digest.hex(), "")
    up = Uploaded(key, len(data), digest.hex(), blake3.blake3(data).hexdigest())
    check_object(client, bucket, up)
    return up


def put_file(client: Any, bucket: str, key: str, read: Callable[[int, int], bytes], size: int,
             *, part_size: int = DEFAULT_PART, lock: ObjectLock | None = None) -> Uploaded:
    """Upload ``size`` bytes that ``read(offset, n)`` returns, multipart above one part."""
    if size <= part_size:
        return put_bytes(client, bucket, key, read(0, size), lock)
    part_size = max(part_size, MIN_PART)
    upload_id = client.create_multipart_upload(
        Bucket=bucket, Key=key, **(lock.put_args() if lock else {}))["UploadId"]
    try:
        parts, digests, hasher = [], [], blake3.blake3()
        for number, offset in enumerate(range(0, size, part_size), start=1):
            data = read(offset, min(part_size, size - offset))
            digest = hashlib.md5(data).digest()
            hasher.update(data)
            r = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                   PartNumber=number, Body=data, ContentMD5=_md5_b64(digest))
            if r["ETag"].strip('"') != digest.hex():
                raise TransferError(f"part {number} of {key}: the store's ETag {r['ETag']} "
                                    f"is not the MD5 sent ({digest.hex()})")
            parts.append({"PartNumber": number, "ETag": r["ETag"]})
            digests.append(digest)
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # the original error matters more; a crash sweep aborts it later
            pass
        raise
    etag = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
    up = Uploaded(key, size, etag, hasher.hexdigest())
    check_object(client, bucket, up)
    return up


def check_object(client: Any, bucket: str, up: Uploaded) -> None:
    """The object as the store has it must be the one sent: same size, same ETag."""
    head = client.head_object(Bucket=bucket, Key=up.key)
    etag = head["ETag"].strip('"')
    if head["ContentLength"] != up.size or etag != up.etag:
        raise TransferError(f"s3://{bucket}/{up.key} holds {head['ContentLength']} bytes, "
                            f"ETag {etag}; sent {up.size} bytes, ETag {up.etag}")


def get_file(client: Any, bucket: str, key: str, dest: Path, size: int, b3: str) -> None:
    """Download into ``dest`` (created, fsync'd); TransferError unless size and BLAKE3
    match. ``dest`` is removed when they do not."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    hasher, got = blake3.blake3(), 0
    try:
        with open(dest, "wb") as f:
            while chunk := body.read(1 << 20):
                hasher.update(chunk)
                f.write(chunk)
                got += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if got != size or hasher.hexdigest() != b3:
            raise TransferError(f"s3://{bucket}/{key}: got {got} bytes, BLAKE3 "
                                f"{hasher.hexdigest()[:16]}...; expected {size} bytes, "
                                f"{b3[:16]}...")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def abort_incomplete(client: Any, bucket: str, prefix: str) -> int:
    """Abort every multipart upload under ``prefix`` (left by a crash); returns how many."""
    n = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            n += 1
    return n


def delete_prefix(client: Any, bucket: str, prefix: str) -> list[str]:
    """Delete the objects under ``prefix``; returns the keys the store kept (object lock)."""
    kept = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            try:
                client.delete_object(Bucket=bucket, Key=obj["Key"])
            except Exception as exc:
                if error_code(exc) != "AccessDenied":
                    raise
                kept.append(obj["Key"])
    return kept
