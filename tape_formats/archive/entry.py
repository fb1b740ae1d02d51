"""The records the archive layer speaks in: one archived object, where it lies, its index row.

These types are shared by the pax writer/reader, the backup trailer (whose file index is a list
of :class:`IndexEntry`) and the translators, so they live apart from all three.

Paths are always *relative*, POSIX-style, without a leading ``./`` or trailing ``/``; the
root of a backed-up tree is the path ``"."``. Names that are not valid UTF-8 are carried as
``str`` with ``surrogateescape`` (what ``os.fsdecode`` gives) and written as their raw bytes
(with the pax ``hdrcharset=BINARY`` record); :func:`printable_path` shows them escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"]
KINDS: tuple[str, ...] = ("file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo")


class ArchiveError(Exception):
    """Any problem with an archive stream or label; the message is one line fit for an admin."""


class ArchiveCorrupt(ArchiveError):
    """The bytes are damaged: a header checksum, a data sha256 or the framing is wrong."""


class UnsafePath(ArchiveError):
    """A member path is absolute, contains ``..`` or is otherwise unfit to restore."""


@dataclass(slots=True)
class ArchiveEntry:
    """One object in a pax stream (or a deletion marker, when ``deleted`` is true).

    ``sparse_map`` lists the *data* extents ``(offset, length)`` of a sparse file; the data
    that follows the entry is then those extents concatenated (``data_size`` bytes), and the
    file's logical length is ``size``. For a non-sparse file ``sparse_map`` is ``None`` and
    the data is ``size`` bytes. ``linkname`` is a symlink's target or, for a hard link, the
    archive path of the file it links to.
    """

    path: str
    kind: Kind
    size: int = 0
    mode: int = 0o644  # permission bits incl. setuid/setgid/sticky (no file type bits)
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime_ns: int = 0
    atime_ns: int | None = None
    ctime_ns: int | None = None
    linkname: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    sparse_map: list[tuple[int, int]] | None = None
    devmajor: int = 0
    devminor: int = 0
    deleted: bool = False

    @property
    def data_size(self) -> int:
        """How many content bytes follow the header in the stream."""
        if self.kind != "file" or self.deleted:
            return 0
        if self.sparse_map is not None:
            return sum(length for _, length in self.sparse_map)
        return self.size


@dataclass(slots=True, frozen=True)
class EntryLocation:
    """Where :meth:`PaxWriter.add` put an entry, as offsets in the pax byte stream.

    ``header_offset`` is the first byte of the entry's first header block (its pax 'x' header
    when it has one): a single-file restore starts reading there. ``data_offset`` is the first
    content byte (for a sparse file: the first byte of the GNU 1.0 sparse map block).
    ``size`` is the number of content bytes written (without padding), ``sha256`` their hex
    digest (the extents concatenated, for a sparse file). ``short`` is true when the data
    source gave fewer bytes than announced and the writer padded with zeros to keep the stream
    valid: the caller must treat the copy as torn.
    """

    header_offset: int
    data_offset: int
    size: int
    sha256: str | None
    short: bool = False
    end_offset: int = 0  # first byte after the entry's padded data


@dataclass(slots=True)
class IndexEntry:
    """One row of a backup's file index (trailer and catalog).

    ``sha256`` is the hex digest of the entry's content bytes as stored in the stream (for a
    sparse file: the data extents concatenated). ``torn`` marks a file that kept changing while
    it was read: its archived copy may mix old and new bytes. ``deleted`` rows record paths
    removed since the parent backup (they carry no data and no offsets).
    """

    path: str
    kind: str
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    sha256: str | None = None
    header_offset: int = -1
    data_offset: int = -1
    deleted: bool = False
    linkname: str = ""
    torn: bool = False

    def to_json(self) -> dict:
        """A compact dict (defaults that most rows share are left out). Built by hand: the
        generic dataclasses.asdict deep-copies and costs ~10x more per row."""
        d = {
            "path": self.path, "kind": self.kind, "size": self.size, "mtime_ns": self.mtime_ns,
            "mode": self.mode, "uid": self.uid, "gid": self.gid,
            "header_offset": self.header_offset, "data_offset": self.data_offset,
        }
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        if self.deleted:
            d["deleted"] = True
        if self.linkname:
            d["linkname"] = self.linkname
        if self.torn:
            d["torn"] = True
        return d

    @classmethod
    def from_json(cls, d: dict) -> IndexEntry:
        return cls(**d)


_CONTROL_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable_path(path: str) -> str:
    """``path`` fit for a terminal or a log line, one line, never raising on output.

    Why: a Linux name is bytes; one that is not UTF-8 (carried as ``surrogateescape``) cannot
    be written to a UTF-8 stdout, and a newline or escape sequence in a name would forge
    listing lines. Such bytes show as ``\\xHH``, controls as ``\\n``/``\\t``/``\\r``/``\\xHH``,
    and a backslash as ``\\\\`` (as ``ls -b`` does), so the shown form is unambiguous.
    """
    if path.isprintable() and "\\" not in path:
        return path  # the common case: nothing to escape
    out = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


_UNESCAPE = re.compile(r"\\(\\|n|t|r|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")


def parse_printable_path(text: str) -> str:
    """The name :func:`printable_path` showed as ``text`` (``\\xe9`` back to the byte), so
    what ``ebm ls`` prints can be given back as a path. Unknown escapes stay as they are."""
    def one(m: re.Match[str]) -> str:
        code = m[1]
        if code[0] in "xu":
            n = int(code[1:], 16)
            return chr(0xDC00 + n) if code[0] == "x" and n >= 0x80 else chr(n)
        return {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}[code]
    return _UNESCAPE.sub(one, text) if "\\" in text else text


def check_member_path(path: str) -> str:
    """Return ``path`` if it is a safe relative archive path, else raise :class:`UnsafePath`.

    Why: a restore joins the path to a target directory; an absolute path or a ``..`` would
    write outside it.
    """
    if path == ".":
        return path
    if not path or path.startswith("/") or "\x00" in path:
        raise UnsafePath(f"refusing unsafe archive path {path!r}")
    wrapped = "/" + path + "/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise UnsafePath(f"refusing unsafe archive path {path!r}")
    return path


def normalize_member_name(name: str) -> str:
    """Turn a tar member name (``./a/b/``, ``a//b``) into the canonical relative path."""
    if name.startswith("/"):
        return name  # kept as is so that check_member_path refuses it by name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return "."
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts) if parts else "."
