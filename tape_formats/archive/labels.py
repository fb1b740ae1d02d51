"""Backup header and trailer labels: the tape files that frame each backup's pax stream.

On tape one backup is: a **header** tape file (one block, ``encode_header``), one or more data
tape files holding the pax stream, and a **trailer** tape file (``encode_trailer``, possibly
several blocks). Both labels are construct-defined::

    RawCopy(signed part):
        magic            b"EBM BACKUP HEADER\\n" | b"EBM BACKUP TRAILER\\n"   (readable)
        text             UTF-8, NUL-terminated: what this is and how to restore it by hand
        format_version   uint16 big-endian (headers: 1; trailers: 2, and 1 still reads)
        body             uint32 length + HEADER_BODY / TRAILER_BODY
    sha256               32 bytes over the whole signed part
    (zero padding to a multiple of 512 bytes, ignored on decode)

Like Amanda's tape headers, the text comes first, so ``dd if=/dev/nst0 bs=256k count=1 | head``
shows a person what the backup is and the exact commands that restore it without the EBM. The
trailer repeats the backup's identity and adds counts, byte totals, the stream digest,
warnings, a free-form JSON ``extra`` (the data mover records its tape layout there)
and the complete file index (JSON lines, zstd-compressed), so ``ebm catalog rebuild`` can
rebuild the catalog from tapes alone.

Trailer versions differ only in what the 32-byte ``stream_digest`` field means: version 1 is
the sha256 of every byte of the pax stream; version 2 (written since) is the member digest of
``stream_digest.py``, which costs no second pass over the data. Both decode;
``BackupTrailerInfo.stream_digest_kind`` says which one a trailer holds.

Errors: :class:`BadMagic` (not one of our labels), :class:`UnsupportedVersion`,
:class:`LabelChecksumError` (damaged), all subclasses of :class:`LabelError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard
from construct import (
    Bytes,
    Checksum,
    ChecksumError,
    Const,
    ConstructError,
    CString,
    Flag,
    FlagsEnum,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32sb,
    Int32ub,
    Int64sb,
    Int64ub,
    PascalString,
    Prefixed,
    RawCopy,
    Struct,
    this,
)

from .entry import ArchiveError, IndexEntry
from .packed_index import PackedIndex
from .stream_digest import MEMBERS, PLAIN

FORMAT_VERSION = 1  # what headers are written as
TRAILER_VERSION = 2  # what trailers are written as: stream_digest is the member digest
_TRAILER_VERSIONS = {1: PLAIN, 2: MEMBERS}  # version -> the kind of stream digest it holds
HEADER_MAGIC = b"EBM BACKUP HEADER\n"
TRAILER_MAGIC = b"EBM BACKUP TRAILER\n"
LABEL_ALIGN = 512
DEFAULT_RESTORE_BLOCK = 262144


class LabelError(ArchiveError):
    """A backup header or trailer could not be decoded."""


class BadMagic(LabelError):
    pass


class UnsupportedVersion(LabelError):
    pass


class LabelChecksumError(LabelError):
    pass


_Str = PascalString(Int16ub, "utf8")
_LongStr = PascalString(Int32ub, "utf8")

HEADER_BODY = Struct(
    "backup_uuid" / Bytes(16),
    "parent_uuid" / Bytes(16),  # all zero for a baseline
    "level" / Int32ub,  # 0 = baseline, n = n-th incremental
    "created_ns" / Int64sb,
    "flags" / FlagsEnum(Int32ub, compressed=1, encrypted=2),
    "dataset" / _Str,
    "translator" / _Str,
    "translator_version" / _Str,
    "cipher" / _Str,  # "" or e.g. "AES-256-GCM"
    "kdf" / _Str,  # "" or e.g. "scrypt"
    "kdf_params" / _LongStr,  # JSON object
    "salt" / Prefixed(Int8ub, GreedyBytes),
    "block_size" / Int32ub,  # tape block size the data mover uses (0 = unknown/variable)
    "data_tape_file" / Int32sb,  # absolute tape file number of the pax stream, -1 = unknown
    "options" / _LongStr,  # JSON object for what later versions add
)

TRAILER_BODY = Struct(
    "backup_uuid" / Bytes(16),
    "finished_ns" / Int64sb,
    "complete" / Flag,
    "entry_count" / Int64ub,
    "file_count" / Int64ub,
    "dir_count" / Int64ub,
    "symlink_count" / Int64ub,
    "hardlink_count" / Int64ub,
    "other_count" / Int64ub,
    "deleted_count" / Int64ub,
    "torn_count" / Int64ub,
    "data_bytes" / Int64ub,  # file content bytes (logical sizes of regular files)
    "stream_bytes" / Int64ub,  # length of the pax stream
    "stream_digest" / Bytes(32),  # v1: sha256 of the stream; v2: member digest
    "warnings" / _LongStr,  # JSON list of strings
    "extra" / _LongStr,  # JSON object (e.g. the data mover's tape layout)
    "index" / Prefixed(Int64ub, GreedyBytes),  # zstd(JSON lines of IndexEntry)
)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _label(magic: bytes, body):
    return Struct(
        "signed"
        / RawCopy(
            Struct(
                "magic" / Const(magic),
                "text" / CString("utf8"),
                "format_version" / Int16ub,
                "body" / Prefixed(Int32ub, body),
            )
        ),
        "sha256" / Checksum(Bytes(32), _sha256, this.signed.data),
    )


BACKUP_HEADER = _label(HEADER_MAGIC, HEADER_BODY)
BACKUP_TRAILER = _label(TRAILER_MAGIC, TRAILER_BODY)


@dataclass(slots=True)
class BackupHeaderInfo:
    """Everything the header says about a backup. ``text`` is filled in by encode/decode."""

    backup_uuid: uuidlib.UUID
    dataset: str
    translator: str
    translator_version: str
    level: int = 0
    parent_uuid: uuidlib.UUID | None = None
    created_ns: int = field(default_factory=time.time_ns)
    compressed: bool = False  # drive compression was on (transparent to readers)
    encrypted: bool = False
    cipher: str = ""
    kdf: str = ""
    kdf_params: dict = field(default_factory=dict)
    salt: bytes = b""
    block_size: int = 0
    data_tape_file: int = -1
    options: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    text: str = ""


@dataclass(slots=True)
class BackupTrailerInfo:
    """Counts, totals, stream digest and file index of a finished backup."""

    backup_uuid: uuidlib.UUID
    stream_bytes: int
    stream_digest: str  # hex, of the kind stream_digest_kind names
    index: list[IndexEntry] | PackedIndex = field(default_factory=list)
    finished_ns: int = field(default_factory=time.time_ns)
    complete: bool = True
    entry_count: int = 0
    file_count: int = 0
    dir_count: int = 0
    symlink_count: int = 0
    hardlink_count: int = 0
    other_count: int = 0
    deleted_count: int = 0
    torn_count: int = 0
    data_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    format_version: int = TRAILER_VERSION
    text: str = ""

    @property
    def stream_digest_kind(self) -> str:
        """``stream_digest.PLAIN`` (version 1) or ``stream_digest.MEMBERS`` (version 2)."""
        return _TRAILER_VERSIONS[self.format_version]

    @classmethod
    def from_index(cls, backup_uuid: uuidlib.UUID, index: list[IndexEntry] | PackedIndex, *,
                   stream_bytes: int, stream_digest: str, warnings: Iterable[str] = (),
                   extra: dict | None = None) -> BackupTrailerInfo:
        """Build a trailer whose counts are computed from ``index`` (a PackedIndex kept them
        as its rows were added)."""
        info = cls(backup_uuid=backup_uuid, stream_bytes=stream_bytes,
                   stream_digest=stream_digest,
                   index=index if isinstance(index, PackedIndex) else list(index),
                   warnings=list(warnings), extra=dict(extra or {}))
        if isinstance(index, PackedIndex):
            for name, value in index.counts().items():
                setattr(info, name, value)
            return info
        for e in index:
            if e.deleted:
                info.deleted_count += 1
                continue
            info.entry_count += 1
            if e.kind == "file":
                info.file_count += 1
                info.data_bytes += e.size
            elif e.kind == "dir":
                info.dir_count += 1
            elif e.kind == "symlink":
                info.symlink_count += 1
            elif e.kind == "hardlink":
                info.hardlink_count += 1
            else:
                info.other_count += 1
            info.torn_count += int(e.torn)
        return info


def _iso(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def header_text(info: BackupHeaderInfo) -> str:
    """The human-readable part: identity plus the commands that restore without the EBM."""
    bs = info.block_size if info.block_size >= 65536 else DEFAULT_RESTORE_BLOCK
    if info.block_size and info.block_size > bs:
        bs = info.block_size
    if info.level == 0:
        level = "0 (baseline: a complete copy)"
    else:
        level = f"{info.level} (incremental: only changes since backup {info.parent_uuid})"
    lines = [
        "This tape file is the header of a backup written by the EBM (extensible backup manager).",
        f"  backup:      {info.backup_uuid}",
        f"  dataset:     {info.dataset}",
        f"  level:       {level}",
        f"  translator:  {info.translator} {info.translator_version}",
        f"  created:     {_iso(info.created_ns)}",
        f"  format:      EBM archive v{info.format_version}: this header, then a POSIX pax (tar)",
        "               stream in the next tape file(s), then a trailer tape file with the index.",
        "",
    ]
    if info.encrypted:
        lines += [
            f"The pax stream is ENCRYPTED ({info.cipher or 'AES-256-GCM'}, key derived with "
            f"{info.kdf or 'a KDF'} from a passphrase or key file).",
            "tar alone cannot read it: restore it with `ebm restore` and the key.",
        ]
    else:
        if info.data_tape_file >= 0:
            pos = [
                "  mt -f /dev/nst0 rewind",
                f"  mt -f /dev/nst0 fsf {info.data_tape_file}",
            ]
        else:
            pos = ["  mt -f /dev/nst0 fsf 1        # from this header to the data tape file"]
        lines += [
            "To restore without the EBM (Linux st driver, no-rewind device /dev/nst0):",
            *pos,
            f"  dd if=/dev/nst0 bs={bs} | tar -xvf -",
            "List instead of extract with `tar -tvf -`. If the backup continues on another",
            "cartridge, concatenate the data tape files: ( dd ...; dd ... ) | tar -xvf -",
            "Names that are not UTF-8 are stored as raw bytes (pax hdrcharset=BINARY): GNU tar",
            "extracts them exactly; add --warning=no-unknown-keyword to quiet its notice.",
        ]
    if info.level > 0:
        lines += [
            "An incremental must be restored after its baseline and earlier incrementals, in order.",
            "Paths deleted since the parent are listed in pax global records EBM.deleted (JSON);",
            "GNU tar ignores them, so remove those paths by hand after extracting.",
        ]
    return "\n".join(lines) + "\n"


def trailer_text(info: BackupTrailerInfo) -> str:
    return (
        "This tape file is the trailer of EBM backup "
        f"{info.backup_uuid}: {info.entry_count} entries, {info.data_bytes} content bytes, "
        f"{info.deleted_count} deletions, pax stream {info.stream_bytes} bytes, "
        f"{info.stream_digest_kind} {info.stream_digest}. It holds the backup's file index "
        "(zstd JSON lines).\n"
    )


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % LABEL_ALIGN)


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _encode(label: Struct, what: str, text: str, body: dict) -> bytes:
    """Build one signed label and pad it; a field construct rejects is a LabelError."""
    try:
        raw = label.build(
            dict(signed=dict(value=dict(text=text, format_version=FORMAT_VERSION, body=body)))
        )
    except ConstructError as exc:
        raise LabelError(f"cannot encode backup {what}: {exc}") from None
    return _pad(raw)


def _json_fields(what: str, *texts: str) -> list:
    """Parse a label's JSON text fields; bad JSON means the label is damaged, not a crash."""
    try:
        return [json.loads(t) for t in texts]
    except ValueError:
        raise LabelError(f"damaged EBM backup {what}: bad JSON field") from None


def encode_header(info: BackupHeaderInfo) -> bytes:
    """Encode the header label (padded to 512 bytes; the data mover writes it as one block)."""
    if not 0 <= info.level < 2**32:
        raise LabelError(f"bad backup level {info.level}")
    if info.level > 0 and info.parent_uuid is None:
        raise LabelError("an incremental backup header needs a parent backup uuid")
    text = header_text(info)
    body = dict(
        backup_uuid=info.backup_uuid.bytes,
        parent_uuid=info.parent_uuid.bytes if info.parent_uuid else bytes(16),
        level=info.level,
        created_ns=info.created_ns,
        flags=dict(compressed=info.compressed, encrypted=info.encrypted),
        dataset=info.dataset,
        translator=info.translator,
        translator_version=info.translator_version,
        cipher=info.cipher,
        kdf=info.kdf,
        kdf_params=_json(info.kdf_params),
        salt=info.salt,
        block_size=info.block_size,
        data_tape_file=info.data_tape_file,
        options=_json(info.options),
    )
    return _encode(BACKUP_HEADER, "header", text, body)


def _decode(label, magic: bytes, what: str, data: bytes | memoryview,
            versions: Iterable[int] = (FORMAT_VERSION,)):
    data = bytes(data)
    if not data.startswith(magic):
        raise BadMagic(f"not an EBM backup {what} (bad magic)")
    nul = data.find(b"\x00", len(magic))
    if nul < 0 or nul + 3 > len(data):
        raise LabelError(f"truncated EBM backup {what}")
    version = int.from_bytes(data[nul + 1 : nul + 3], "big")
    if version not in versions:
        readable = ", ".join(str(v) for v in versions)
        raise UnsupportedVersion(
            f"EBM backup {what} format version {version} is not supported (this reads {readable})"
        )
    try:
        parsed = label.parse(data)
    except ChecksumError:
        raise LabelChecksumError(f"EBM backup {what} checksum mismatch: the label is damaged") from None
    except (ConstructError, UnicodeDecodeError) as exc:
        raise LabelError(f"damaged or truncated EBM backup {what}: {exc.__class__.__name__}") from None
    return parsed.signed.value


def decode_header(data: bytes | memoryview) -> BackupHeaderInfo:
    v = _decode(BACKUP_HEADER, HEADER_MAGIC, "header", data)
    b = v.body
    kdf_params, options = _json_fields("header", b.kdf_params, b.options)
    return BackupHeaderInfo(
        backup_uuid=uuidlib.UUID(bytes=b.backup_uuid),
        parent_uuid=None if b.parent_uuid == bytes(16) else uuidlib.UUID(bytes=b.parent_uuid),
        dataset=b.dataset,
        translator=b.translator,
        translator_version=b.translator_version,
        level=b.level,
        created_ns=b.created_ns,
        compressed=bool(b.flags.compressed),
        encrypted=bool(b.flags.encrypted),
        cipher=b.cipher,
        kdf=b.kdf,
        kdf_params=kdf_params,
        salt=b.salt,
        block_size=b.block_size,
        data_tape_file=b.data_tape_file,
        options=options,
        format_version=v.format_version,
        text=v.text,
    )


_INDEX_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


_INDEX_BATCH = 4096  # rows encoded and handed to the compressor at a time
_INDEX_LEVEL = 1  # the index is mostly sha256 hex: level 1 packs it as small as 6 does, 2x faster


def encode_index(index: Iterable[IndexEntry]) -> bytes:
    """The file index as zstd-compressed JSON lines (one IndexEntry per line)."""
    out = io.BytesIO()
    write_index(index, out)
    return out.getvalue()


def write_index(index: Iterable[IndexEntry], out: BinaryIO) -> int:
    """:func:`encode_index` into ``out``, a batch of rows at a time (the uncompressed text of
    a 200,000-file index is ~35 MB, its compressed form a tenth of that, and neither is held
    whole); returns the bytes written. A PackedIndex formats its own lines (no row objects)."""
    comp = zstandard.ZstdCompressor(level=_INDEX_LEVEL).compressobj()
    if isinstance(index, PackedIndex):
        n = 0
        for text in index.json_lines():
            n += out.write(comp.compress(text))
        return n + out.write(comp.flush())
    encode = _INDEX_ENCODER.encode  # one encoder for all rows (json.dumps builds one per call)
    batch: list[str] = []
    n = 0
    for e in index:
        batch.append(encode(e.to_json()))
        if len(batch) >= _INDEX_BATCH:
            n += out.write(comp.compress(("\n".join(batch) + "\n").encode("utf-8", "surrogateescape")))
            batch.clear()
    if batch:
        n += out.write(comp.compress(("\n".join(batch) + "\n").encode("utf-8", "surrogateescape")))
    return n + out.write(comp.flush())


def decode_index(blob: bytes) -> list[IndexEntry]:
    try:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        return [
            IndexEntry.from_json(json.loads(line))
            for line in raw.decode("utf-8", "surrogateescape").splitlines()
            if line
        ]
    except (zstandard.ZstdError, ValueError, TypeError) as exc:
        raise LabelError(f"damaged file index in EBM backup trailer: {exc}") from None


def encode_trailer(info: BackupTrailerInfo) -> bytes:
    """Encode the trailer label (padded to 512 bytes; may span several tape blocks)."""
    out = io.BytesIO()
    write_trailer(info, out)
    return out.getvalue()


class Base64File:
    """A string value of the trailer's ``extra`` written from a file, never held whole:
    ``prefix`` then the base64 of ``file`` (read from its start). Why: a state of millions of
    paths is tens of megabytes, and its base64 copies in one JSON string were what grew."""

    def __init__(self, prefix: str, file: BinaryIO) -> None:
        self.prefix = prefix
        self.file = file

    def size(self) -> int:
        """Length of the JSON value written (quotes included)."""
        n = self.file.seek(0, 2)
        return len(json.dumps(self.prefix)) + 4 * -(-n // 3)

    def write(self, out: BinaryIO, digest) -> int:
        head = json.dumps(self.prefix).encode()[:-1]  # the opening quote and the prefix
        digest.update(head)
        n = out.write(head)
        self.file.seek(0)
        while chunk := self.file.read(_B64_CHUNK):
            text = base64.b64encode(chunk)
            digest.update(text)
            n += out.write(text)
        digest.update(b'"')
        return n + out.write(b'"')


_B64_CHUNK = 3 << 18  # a multiple of 3: the chunks' base64 joined is the whole file's
_STREAMED = "\0ebm-streamed-value\0"  # stands for a Base64File while the JSON is built


def _extra_parts(extra: dict) -> list[bytes | Base64File]:
    """``extra`` as compact JSON, in pieces: text, and the Base64File values in place."""
    files = {k: v for k, v in extra.items() if isinstance(v, Base64File)}
    text = _json({k: (_STREAMED if k in files else v) for k, v in extra.items()})
    parts: list[bytes | Base64File] = []
    for key in sorted(files):  # _json sorts keys: the placeholders come in this order
        before, text = text.split(json.dumps(_STREAMED), 1)
        parts += [before.encode(), files[key]]
    return parts + [text.encode()]


def write_trailer(info: BackupTrailerInfo, out: BinaryIO) -> int:
    """:func:`encode_trailer` into the file ``out``, with the file index (and any
    :class:`Base64File` value of ``extra``) streamed through it instead of built in memory:
    the bytes BACKUP_TRAILER would build (``extra`` and the index are its last fields),
    assembled around a spooled index. Returns the bytes written."""
    if info.format_version not in _TRAILER_VERSIONS:
        raise LabelError(f"cannot encode backup trailer version {info.format_version}")
    text = trailer_text(info)
    extra = _extra_parts(info.extra)
    extra_len = sum(p.size() if isinstance(p, Base64File) else len(p) for p in extra)
    body = dict(
        backup_uuid=info.backup_uuid.bytes,
        finished_ns=info.finished_ns,
        complete=info.complete,
        entry_count=info.entry_count,
        file_count=info.file_count,
        dir_count=info.dir_count,
        symlink_count=info.symlink_count,
        hardlink_count=info.hardlink_count,
        other_count=info.other_count,
        deleted_count=info.deleted_count,
        torn_count=info.torn_count,
        data_bytes=info.data_bytes,
        stream_bytes=info.stream_bytes,
        stream_digest=bytes.fromhex(info.stream_digest),
        warnings=_json(list(info.warnings)),
        extra="",
        index=b"",
    )
    try:
        head = TRAILER_BODY.build(body)[:-12]  # the fields before extra's length
    except ConstructError as exc:
        raise LabelError(f"cannot encode backup trailer: {exc}") from None
    if extra_len >= 2**32:
        raise LabelError(f"cannot encode backup trailer: extra of {extra_len} bytes is too big")
    with tempfile.SpooledTemporaryFile(max_size=1 << 20, prefix="ebm-trailer-") as index:
        size = write_index(info.index, index)
        body_len = len(head) + 4 + extra_len + 8 + size
        if body_len >= 2**32:
            raise LabelError(f"cannot encode backup trailer: index of {size} bytes is too big")
        digest = hashlib.sha256()
        start = (TRAILER_MAGIC + text.encode("utf-8") + b"\0"
                 + info.format_version.to_bytes(2, "big")
                 + body_len.to_bytes(4, "big") + head + extra_len.to_bytes(4, "big"))
        digest.update(start)
        n = out.write(start)
        for part in extra:
            if isinstance(part, Base64File):
                n += part.write(out, digest)
            else:
                digest.update(part)
                n += out.write(part)
        digest.update(size.to_bytes(8, "big"))
        n += out.write(size.to_bytes(8, "big"))
        index.seek(0)
        while chunk := index.read(1 << 20):
            digest.update(chunk)
            n += out.write(chunk)
        n += out.write(digest.digest())
        return n + out.write(bytes(-n % LABEL_ALIGN))


def decode_trailer(data: bytes | memoryview, *, with_index: bool = True) -> BackupTrailerInfo:
    v = _decode(BACKUP_TRAILER, TRAILER_MAGIC, "trailer", data, _TRAILER_VERSIONS)
    b = v.body
    warnings, extra = _json_fields("trailer", b.warnings, b.extra)
    return BackupTrailerInfo(
        backup_uuid=uuidlib.UUID(bytes=b.backup_uuid),
        stream_bytes=b.stream_bytes,
        stream_digest=b.stream_digest.hex(),
        index=decode_index(b.index) if with_index else [],
        finished_ns=b.finished_ns,
        complete=bool(b.complete),
        entry_count=b.entry_count,
        file_count=b.file_count,
        dir_count=b.dir_count,
        symlink_count=b.symlink_count,
        hardlink_count=b.hardlink_count,
        other_count=b.other_count,
        deleted_count=b.deleted_count,
        torn_count=b.torn_count,
        data_bytes=b.data_bytes,
        warnings=warnings,
        extra=extra,
        format_version=v.format_version,
        text=v.text,
    )


def label_kind(data: bytes | memoryview) -> str | None:
    """"header", "trailer" or None: lets a scanner (catalog rebuild) classify a tape file."""
    head = bytes(data[: len(TRAILER_MAGIC)])
    if head.startswith(HEADER_MAGIC):
        return "header"
    if head.startswith(TRAILER_MAGIC):
        return "trailer"
    return None
