"""The EBM archive format: what one backup looks like on tape.

Contract between the translators (which produce and consume pax streams) and the EBM's data
mover (which puts byte streams into tape blocks, filemarks and cartridges)::

    tape file k     : backup header label, one block          encode_header / decode_header
    tape file k+1.. : the pax stream (plain POSIX pax; GNU tar  PaxWriter / PaxReader
                      lists and extracts it when unencrypted)
    next tape file  : backup trailer label (counts, totals,   encode_trailer / decode_trailer
                      stream sha256, zstd file index)

The translators never see blocks or filemarks; the data mover never parses tar. Offsets in
:class:`EntryLocation` / :class:`IndexEntry` are byte offsets in the pax stream, which the
data mover maps to (cartridge, tape file, block) for LOCATE-based single-file restores: with
fixed-size blocks of B bytes, the entry at stream offset o starts in block o // B of the data
tape file, at byte o % B. A single-file reader then uses ``PaxReader(src,
start_offset=header_offset)`` after discarding the first ``o % B`` bytes.

See :mod:`.writer` for the exact pax records written (long names, ns times, ownership,
SCHILY.xattr, GNU sparse 1.0, hard links, devices, EBM.deleted deletion markers), :mod:`.reader`
for verification and :mod:`.labels` for the label layout.
"""

from .entry import (
    KINDS,
    ArchiveCorrupt,
    ArchiveEntry,
    ArchiveError,
    EntryLocation,
    IndexEntry,
    Kind,
    UnsafePath,
    check_member_path,
    normalize_member_name,
    parse_printable_path,
    printable_path,
)
from .labels import (
    BACKUP_HEADER,
    BACKUP_TRAILER,
    FORMAT_VERSION,
    TRAILER_VERSION,
    BackupHeaderInfo,
    BackupTrailerInfo,
    BadMagic,
    LabelChecksumError,
    LabelError,
    UnsupportedVersion,
    decode_header,
    decode_index,
    decode_trailer,
    encode_header,
    encode_index,
    encode_trailer,
    header_text,
    label_kind,
)
from .packed_index import PackedIndex
from .reader import EntryData, PaxReader
from .writer import PaxWriter

__all__ = [
    "PackedIndex",
    "BACKUP_HEADER",
    "BACKUP_TRAILER",
    "FORMAT_VERSION",
    "TRAILER_VERSION",
    "KINDS",
    "ArchiveCorrupt",
    "ArchiveEntry",
    "ArchiveError",
    "BackupHeaderInfo",
    "BackupTrailerInfo",
    "BadMagic",
    "EntryData",
    "EntryLocation",
    "IndexEntry",
    "Kind",
    "LabelChecksumError",
    "LabelError",
    "PaxReader",
    "PaxWriter",
    "UnsafePath",
    "UnsupportedVersion",
    "check_member_path",
    "decode_header",
    "decode_index",
    "decode_trailer",
    "encode_header",
    "encode_index",
    "encode_trailer",
    "header_text",
    "label_kind",
    "normalize_member_name",
    "parse_printable_path",
    "printable_path",
]
