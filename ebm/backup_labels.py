"""Backup header and trailer blocks, as the EBM fills them in.

A thin adapter over ``tape_formats.archive.labels`` (construct-defined BACKUP_HEADER and
BACKUP_TRAILER): the manager speaks plain dicts, the labels stay the one on-tape encoding.
What the EBM adds in the labels' JSON fields:

- header ``options``: ``seq`` (volume sequence of this cartridge within the backup; > 0 is a
  continuation), ``pool``, ``source``, ``level_name`` (full/incr), ``compress`` and the key
  check value ``kcv`` of an encrypted backup (salt and scrypt params have their own fields);
- trailer ``extra``: ``state`` (the translator state, so a rebuilt catalog can continue the
  chain with an incremental), ``dataset``, ``level_name``, ``blocks``.
"""

from __future__ import annotations

import tempfile
import uuid as uuidlib
from typing import IO, Any

from tape_formats.archive.entry import IndexEntry
from tape_formats.archive.labels import (
    BackupHeaderInfo,
    BackupTrailerInfo,
    LabelError,
    decode_header,
    decode_trailer,
    encode_header,
    encode_trailer,
    write_trailer,
)

__all__ = ["LabelError", "header_block", "parse_header", "trailer_bytes", "trailer_file",
           "parse_trailer"]


def header_block(*, uuid: str, dataset: str, translator: str, translator_version: str,
                 depth: int, parent: str | None, created: float, block_size: int,
                 data_tape_file: int, seq: int, crypto: dict[str, Any] | None,
                 options: dict[str, Any]) -> bytes:
    """One header block for volume ``seq`` of a backup."""
    opts = {**options, "seq": seq}
    info = BackupHeaderInfo(
        backup_uuid=uuidlib.UUID(uuid), dataset=dataset, translator=translator,
        translator_version=translator_version, level=depth,
        parent_uuid=uuidlib.UUID(parent) if parent else None,
        created_ns=int(created * 1e9), compressed=bool(options.get("compress")),
        block_size=block_size, data_tape_file=data_tape_file if seq == 0 else -1,
        options=opts,
    )
    if crypto:
        info.encrypted = True
        info.cipher = crypto["alg"]
        info.kdf = crypto["kdf"]
        info.kdf_params = {"n": crypto["n"], "r": crypto["r"], "p": crypto["p"]}
        info.salt = bytes.fromhex(crypto["salt"])
        info.options["kcv"] = crypto["kcv"]
    return encode_header(info)


def parse_header(block: bytes | memoryview) -> dict[str, Any] | None:
    """The header as a dict (None if the block is not a backup header)."""
    try:
        info = decode_header(block)
    except LabelError:
        return None
    crypto = None
    if info.encrypted:
        crypto = {"alg": info.cipher, "kdf": info.kdf, "salt": info.salt.hex(),
                  "kcv": info.options.get("kcv", ""), **info.kdf_params}
    return {
        "uuid": str(info.backup_uuid), "dataset": info.dataset, "translator": info.translator,
        "translator_version": info.translator_version, "depth": info.level,
        "parent": str(info.parent_uuid) if info.parent_uuid else None,
        "created": info.created_ns / 1e9, "block_size": info.block_size,
        "seq": int(info.options.get("seq", 0)), "options": info.options, "crypto": crypto,
    }


def trailer_bytes(*, uuid: str, entries: list[IndexEntry], size: int, digest: str,
                  warnings: list[str], extra: dict[str, Any]) -> bytes:
    info = BackupTrailerInfo.from_index(uuidlib.UUID(uuid), entries, stream_bytes=size,
                                        stream_digest=digest, warnings=warnings, extra=extra)
    return encode_trailer(info)


def trailer_file(*, uuid: str, entries: list[IndexEntry], size: int, digest: str,
                 warnings: list[str], extra: dict[str, Any]) -> IO[bytes]:
    """:func:`trailer_bytes` in an unlinked temporary file (at offset 0), the file index
    streamed into it: a tree of millions of files never holds its trailer in memory."""
    info = BackupTrailerInfo.from_index(uuidlib.UUID(uuid), entries, stream_bytes=size,
                                        stream_digest=digest, warnings=warnings, extra=extra)
    out = tempfile.TemporaryFile(prefix="ebm-trailer-")
    try:
        write_trailer(info, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def parse_trailer(data: bytes) -> BackupTrailerInfo | None:
    try:
        return decode_trailer(data)
    except LabelError:
        return None
