"""Low-level POSIX.1-2001 pax / ustar block encoding and decoding.

Hand-written rather than construct-defined on purpose: a backup of 50k files builds 100k of
these 512-byte headers, and plain ``bytes`` work is an order of magnitude faster than a
generic parser here. The layout follows POSIX ``pax`` (ustar header, 'x' extended headers,
'g' global headers) and the GNU sparse 1.0 convention that GNU tar reads.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .entry import ArchiveCorrupt, ArchiveError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

TYPE_FILE = b"0"
TYPE_HARDLINK = b"1"
TYPE_SYMLINK = b"2"
TYPE_CHARDEV = b"3"
TYPE_BLOCKDEV = b"4"
TYPE_DIR = b"5"
TYPE_FIFO = b"6"
TYPE_CONTIGUOUS = b"7"
TYPE_PAX = b"x"
TYPE_GLOBAL = b"g"
TYPE_GNU_LONGNAME = b"L"
TYPE_GNU_LONGLINK = b"K"

NS = 1_000_000_000


def padding(n: int) -> int:
    """Bytes of zero padding after ``n`` data bytes to reach a block boundary."""
    return -n % BLOCK


_LIMITS = {8: 8**7, 12: 8**11}


def _octal(value: int, width: int) -> bytes:
    """A NUL-terminated octal field; GNU base-256 when it does not fit (the pax record that
    always accompanies such a value is what readers use)."""
    if 0 <= value < _LIMITS[width]:
        return b"%0*o\x00" % (width - 1, value)
    if value < 0 or value >= 256 ** (width - 1):
        return bytes(width)
    out = bytearray(value.to_bytes(width, "big"))
    out[0] |= 0x80
    return bytes(out)


def _octal_or_zero(value: int, width: int) -> bytes:
    if 0 <= value < _LIMITS[width]:
        return b"%0*o\x00" % (width - 1, value)
    return b"%0*o\x00" % (width - 1, 0)


def split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a name into (prefix, name) for the ustar fields, or None if it cannot fit."""
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    # Choose the rightmost '/' such that prefix <= 155 and name <= 100.
    idx = name.rfind(b"/", 0, 156)
    while idx > 0:
        if len(name) - idx - 1 <= 100:
            return name[:idx], name[idx + 1 :]
        idx = name.rfind(b"/", 0, idx)
    return None


# name mode uid gid size mtime chksum typeflag linkname magic+version uname gname devmajor
# devminor prefix pad: one struct call pads (with NULs) and truncates every field.
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_BLANK_CHKSUM = b"        "


def build_ustar(
    *,
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    uname: bytes = b"",
    gname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """One 512-byte ustar header. Fields that do not fit are truncated/zeroed: the caller puts
    the true values in a pax 'x' header first."""
    if len(name) <= 100:
        prefix, short = b"", name
    else:
        split = split_ustar_name(name)
        prefix, short = (b"", name[:100]) if split is None else split
    hdr = _USTAR.pack(
        short, _octal_or_zero(mode & 0o7777777, 8), _octal_or_zero(uid, 8),
        _octal_or_zero(gid, 8), _octal(size, 12), _octal_or_zero(mtime, 12), _BLANK_CHKSUM,
        typeflag, linkname, b"ustar\x0000", uname, gname, _octal_or_zero(devmajor, 8),
        _octal_or_zero(devminor, 8), prefix,
    )
    return b"%s%06o\x00 %s" % (hdr[:148], sum(hdr), hdr[156:])


_POWERS_OF_TEN = tuple(10**i for i in range(40))


def pax_record(key: bytes, value: bytes) -> bytes:
    """One ``"<len> <key>=<value>\\n"`` record; ``len`` counts itself."""
    n = len(key) + len(value) + 3  # " ", "=", "\\n"
    digits = len(str(n))
    total = n + digits
    if total >= _POWERS_OF_TEN[digits]:  # adding the length made the length one digit longer
        total += 1
    return b"%d %s=%s\n" % (total, key, value)


def parse_pax_records(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode an extended header's records, keeping values as raw bytes (xattrs are binary)."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # trailing NUL padding some writers leave
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise ArchiveCorrupt("malformed pax extended header record (no length)")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise ArchiveCorrupt("malformed pax extended header record length") from None
        rec_end = pos + length
        if length <= 0 or rec_end > end or data[rec_end - 1 : rec_end] != b"\n":
            raise ArchiveCorrupt("malformed pax extended header record")
        kv = data[sp + 1 : rec_end - 1]
        eq = kv.find(b"=")
        if eq <= 0:
            raise ArchiveCorrupt("malformed pax extended header record (no '=')")
        out.append((kv[:eq], kv[eq + 1 :]))
        pos = rec_end
    return out


def format_pax_time(ns: int) -> bytes:
    """Nanoseconds since the epoch as a pax decimal time value (``"1700000000.5"``)."""
    secs, frac = divmod(ns if ns >= 0 else -ns, NS)
    sign = b"-" if ns < 0 else b""
    if frac == 0:
        return b"%s%d" % (sign, secs)
    return (b"%s%d.%09d" % (sign, secs, frac)).rstrip(b"0")


def parse_pax_time(value: bytes) -> int:
    """Inverse of :func:`format_pax_time`; accepts any number of fraction digits."""
    text = value.decode("ascii", "replace").strip()
    neg = text.startswith("-")
    if neg:
        text = text[1:]
    whole, _, frac = text.partition(".")
    try:
        ns = int(whole or "0") * NS + int((frac[:9]).ljust(9, "0") or "0")
    except ValueError:
        raise ArchiveCorrupt(f"bad pax time value {value!r}") from None
    return -ns if neg else ns


def _parse_number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        b = bytearray(field)
        b[0] &= 0x7F
        negative = bool(b[0] & 0x40)
        val = int.from_bytes(b, "big")
        if negative:
            val -= 1 << (8 * len(b) - 1)
        return val
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveCorrupt(f"bad numeric field {field!r} in tar header") from None


@dataclass(slots=True)
class UstarHeader:
    name: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: bytes
    uname: bytes
    gname: bytes
    devmajor: int
    devminor: int


def _header_sum(b: bytes) -> int:
    """The unsigned checksum of a header block, its checksum field counted as spaces."""
    return sum(b[:148]) + 256 + sum(b[156:])


try:  # the same in C (tape_formats/archive/_paxfast.c), when it is built
    from ._paxfast import header_sum, ustar_fields  # type: ignore[import-not-found]
except ImportError:
    header_sum, ustar_fields = _header_sum, None
if os.environ.get("VTL_NO_FASTPATH"):
    header_sum, ustar_fields = _header_sum, None


def _cstr(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def parse_ustar(block: bytes | memoryview) -> UstarHeader:
    """Decode and checksum-verify one header block (ustar, pax or old GNU magic). A plain
    POSIX block is decoded in C when the extension is built; this code is the reference."""
    if ustar_fields is not None and (fields := ustar_fields(block)) is not None:
        return UstarHeader(*fields)
    b = bytes(block)
    stored = _parse_number(b[148:156])
    unsigned = header_sum(b)
    if stored != unsigned:
        signed = sum((x - 256 if x > 127 else x) for x in b[:148]) + 256 + sum(
            (x - 256 if x > 127 else x) for x in b[156:]
        )
        if stored != signed:
            raise ArchiveCorrupt("tar header checksum mismatch")
    magic = b[257:265]
    if magic == b"ustar\x0000":
        prefix = _cstr(b[345:500])
    elif magic == b"ustar  \x00":
        prefix = b""  # old GNU: that area holds atime/ctime/sparse data
    else:
        raise ArchiveError("not a ustar/pax archive header (bad magic)")
    name = _cstr(b[0:100])
    if prefix:
        name = prefix + b"/" + name
    return UstarHeader(
        name=name,
        mode=_parse_number(b[100:108]),
        uid=_parse_number(b[108:116]),
        gid=_parse_number(b[116:124]),
        size=_parse_number(b[124:136]),
        mtime=_parse_number(b[136:148]),
        typeflag=b[156:157] if b[156] else TYPE_FILE,
        linkname=_cstr(b[157:257]),
        uname=_cstr(b[265:297]),
        gname=_cstr(b[297:329]),
        devmajor=_parse_number(b[329:337]),
        devminor=_parse_number(b[337:345]),
    )


def encode_sparse_map(extents: list[tuple[int, int]]) -> bytes:
    """The GNU sparse 1.0 map block that precedes a sparse file's data, padded to 512."""
    parts = [str(len(extents)).encode()]
    for off, length in extents:
        parts.append(str(off).encode())
        parts.append(str(length).encode())
    raw = b"\n".join(parts) + b"\n"
    return raw + bytes(padding(len(raw)))


def decode_sparse_map_numbers(read_block) -> tuple[list[tuple[int, int]], int]:
    """Read a GNU sparse 1.0 map using ``read_block()`` (returns the next 512 bytes).

    Returns the extents and the number of bytes consumed (a multiple of 512).
    """
    buf = b""
    consumed = 0
    numbers: list[int] = []
    needed: int | None = None
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                numbers.append(int(line))
            except ValueError:
                raise ArchiveCorrupt("malformed GNU sparse map") from None
            if needed is None:
                needed = 1 + 2 * numbers[0]
            if len(numbers) == needed:
                extents = [(numbers[i], numbers[i + 1]) for i in range(1, needed, 2)]
                return extents, consumed
        block = read_block()
        consumed += BLOCK
        buf += bytes(block)
        if consumed > 64 * 1024 * 1024:
            raise ArchiveCorrupt("GNU sparse map too large")
