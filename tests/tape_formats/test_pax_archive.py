"""Archive format: pax writer/reader round trips, GNU tar interop, labels and corruption."""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tape_formats.archive import (
    BACKUP_HEADER,
    ArchiveCorrupt,
    ArchiveEntry,
    BackupHeaderInfo,
    BackupTrailerInfo,
    BadMagic,
    IndexEntry,
    LabelChecksumError,
    LabelError,
    PaxReader,
    PaxWriter,
    UnsafePath,
    UnsupportedVersion,
    decode_header,
    decode_trailer,
    encode_header,
    encode_trailer,
    label_kind,
    parse_printable_path,
    printable_path,
)

# ----------------------------------------------------------------------------- pax streams

component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00"),
    min_size=1, max_size=60,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)
paths = st.lists(component, min_size=1, max_size=6).map("/".join)
ns_times = st.integers(min_value=0, max_value=2**62)
xattr_names = st.sampled_from(["user.a", "user.long." + "n" * 100, "user.ü", "security.x"])


@st.composite
def entries(draw):
    kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "fifo", "chardev"]))
    e = ArchiveEntry(
        path=draw(paths), kind=kind, mode=draw(st.integers(0, 0o7777)),
        uid=draw(st.one_of(st.integers(0, 65535), st.integers(0, 2**32 - 1))),
        gid=draw(st.integers(0, 2**32 - 1)),
        uname=draw(st.sampled_from(["", "root", "ünïcode", "u" * 40])),
        gname=draw(st.sampled_from(["", "wheel"])),
        mtime_ns=draw(ns_times), atime_ns=draw(st.one_of(st.none(), ns_times)),
        xattrs=draw(st.dictionaries(xattr_names, st.binary(max_size=300), max_size=3)),
    )
    data = b""
    if kind == "file":
        data = draw(st.binary(max_size=5000))
        if draw(st.booleans()) and data:
            # sparse: extents at increasing offsets with gaps
            n = draw(st.integers(1, 3))
            cuts = sorted(draw(st.lists(st.integers(0, len(data)), min_size=n - 1, max_size=n - 1)))
            pieces = [p for p in _split(data, cuts) if p]
            off = 0
            sparse = []
            for p in pieces:
                off += draw(st.integers(0, 10**9))
                sparse.append((off, len(p)))
                off += len(p)
            e.sparse_map = sparse
            e.size = off + draw(st.integers(0, 1000))
        else:
            e.size = len(data)
    elif kind in ("symlink", "hardlink"):
        e.linkname = draw(paths)
    elif kind == "chardev":
        e.devmajor, e.devminor = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    return e, data


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


def write_archive(items, deletions=()) -> tuple[bytes, list]:
    buf = io.BytesIO()
    w = PaxWriter(buf)
    if deletions:
        w.add_deletions(list(deletions))
    locs = [w.add(e, d) for e, d in items]
    w.close()
    assert w.bytes_written == len(buf.getvalue())
    return buf.getvalue(), locs


@settings(max_examples=60, deadline=None)
@given(items=st.lists(entries(), max_size=6), deletions=st.lists(paths, max_size=3))
def test_pax_round_trip(items, deletions):
    archive, locs = write_archive(items, deletions)
    assert len(archive) % 512 == 0
    expected = {loc.header_offset: loc.sha256 for loc in locs if loc.sha256}
    reader = PaxReader(io.BytesIO(archive), expected=expected)
    got = [(e, d.header_offset, d.read()) for e, d in reader]
    assert reader.ended
    deleted = [e.path for e, _, _ in got if e.deleted]
    assert deleted == deletions
    rest = [(e, off, data) for e, off, data in got if not e.deleted]
    assert len(rest) == len(items)
    for (want, data), loc, (e, off, read) in zip(items, locs, rest, strict=True):
        assert off == loc.header_offset
        assert e.path == want.path and e.kind == want.kind
        assert e.mode == want.mode and e.uid == want.uid and e.gid == want.gid
        assert e.uname == want.uname and e.gname == want.gname
        assert e.mtime_ns == want.mtime_ns and e.atime_ns == want.atime_ns
        assert e.xattrs == want.xattrs
        assert e.linkname == want.linkname
        if want.kind == "file":
            assert e.size == want.size
            assert e.sparse_map == want.sparse_map
            assert read == data
        if want.kind == "chardev":
            assert (e.devmajor, e.devminor) == (want.devmajor, want.devminor)


def test_entry_locations_allow_seeking_to_one_member():
    items = [(ArchiveEntry(f"f{i}", "file", size=1000 * i), bytes([i]) * (1000 * i)) for i in range(1, 6)]
    archive, locs = write_archive(items)
    loc = locs[3]
    assert loc.header_offset % 512 == 0 and loc.data_offset % 512 == 0
    assert archive[loc.data_offset : loc.data_offset + 4] == b"\x04" * 4
    # A single-file restore reads from the member's header offset only.
    reader = PaxReader(io.BytesIO(archive[loc.header_offset :]), start_offset=loc.header_offset,
                       expected={loc.header_offset: loc.sha256})
    entry, data = next(iter(reader))
    assert entry.path == "f4" and data.read() == b"\x04" * 4000 and data.verified


def test_gnu_tar_lists_what_we_write(tmp_path):
    items = [
        (ArchiveEntry("dir", "dir", mode=0o755, mtime_ns=1_700_000_000_000_000_001), None),
        (ArchiveEntry("dir/" + "x" * 200, "file", size=5, mtime_ns=1), b"hello"),
        (ArchiveEntry("dir/sparse", "file", size=10 << 20, sparse_map=[(4 << 20, 4)]), b"data"),
        (ArchiveEntry("big-ids", "file", size=0, uid=2**31, gid=2**31 + 1), b""),
        (ArchiveEntry("sym", "symlink", linkname="t" * 150), None),
        (ArchiveEntry("hl", "hardlink", linkname="dir/" + "x" * 200), None),
        (ArchiveEntry("fifo", "fifo"), None),
    ]
    archive, _ = write_archive(items, deletions=["old/file"])
    f = tmp_path / "a.tar"
    f.write_bytes(archive)
    res = subprocess.run(["tar", "--numeric-owner", "-tvf", str(f)], capture_output=True, text=True, check=True)
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert len(lines) == len(items)
    assert "dir/" + "x" * 200 in lines[1]
    assert "10485760" in lines[2] and lines[2].endswith("dir/sparse")
    assert f"{2**31}/{2**31 + 1}" in lines[3]
    assert lines[4].endswith("sym -> " + "t" * 150)
    assert lines[5].endswith("hl link to dir/" + "x" * 200)
    assert lines[6].startswith("p")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(f), "-C", str(out)], check=True)
    assert (out / "dir" / ("x" * 200)).read_bytes() == b"hello"
    sparse = (out / "dir" / "sparse").read_bytes()
    assert len(sparse) == 10 << 20 and sparse[4 << 20 : (4 << 20) + 4] == b"data"
    assert not (out / "old").exists()


def test_reader_parses_gnu_tar_output(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / ("n" * 180)).write_bytes(b"abc")
    f = tmp_path / "gnu.tar"
    for fmt in ("pax", "gnu"):  # pax 'path' records and GNU 'L' long names
        subprocess.run(["tar", f"--format={fmt}", "-cf", str(f), "-C", str(src), "d"], check=True,
                       capture_output=True)
        got = {e.path: d.read() for e, d in PaxReader(f.open("rb"))}
        assert got == {"d": b"", "d/" + "n" * 180: b"abc"}, fmt


def test_corrupted_data_is_detected():
    archive, locs = write_archive([(ArchiveEntry("f", "file", size=3000), b"z" * 3000)])
    bad = bytearray(archive)
    bad[locs[0].data_offset + 100] ^= 1
    reader = PaxReader(io.BytesIO(bytes(bad)), expected={locs[0].header_offset: locs[0].sha256})
    with pytest.raises(ArchiveCorrupt, match="sha256 mismatch"):
        for _, data in reader:
            data.read()


def test_skipped_data_is_still_verified():
    archive, locs = write_archive([(ArchiveEntry("f", "file", size=3000), b"z" * 3000)])
    bad = bytearray(archive)
    bad[locs[0].data_offset + 100] ^= 1
    with pytest.raises(ArchiveCorrupt):
        list(PaxReader(io.BytesIO(bytes(bad)), expected={locs[0].header_offset: locs[0].sha256}))


def test_corrupted_header_and_truncation_are_detected():
    archive, locs = write_archive([(ArchiveEntry("f", "file", size=3), b"abc")])
    bad = bytearray(archive)
    bad[5] ^= 0x20  # inside the first header's name field
    with pytest.raises(ArchiveCorrupt, match="checksum"):
        list(PaxReader(io.BytesIO(bytes(bad))))
    with pytest.raises(ArchiveCorrupt, match="without the end-of-archive marker"):
        list(PaxReader(io.BytesIO(archive[:-1024])))
    with pytest.raises(ArchiveCorrupt, match="truncated"):
        for _, d in PaxReader(io.BytesIO(archive[: locs[0].data_offset + 1])):
            d.read()


def test_short_data_source_is_padded_and_flagged():
    buf = io.BytesIO()
    w = PaxWriter(buf)
    loc = w.add(ArchiveEntry("f", "file", size=100), io.BytesIO(b"only 10 b"))
    w.add(ArchiveEntry("g", "file", size=2), b"ok")
    w.close()
    assert loc.short
    got = {e.path: d.read() for e, d in PaxReader(io.BytesIO(buf.getvalue()))}
    assert got == {"f": b"only 10 b" + bytes(91), "g": b"ok"}


def test_large_file_is_streamed_in_chunks():
    class Counting(io.RawIOBase):
        def __init__(self, size):
            self.left = size
            self.max_request = 0

        def readinto(self, b):
            self.max_request = max(self.max_request, len(b))
            n = min(len(b), self.left)
            b[:n] = b"\x07" * n
            self.left -= n
            return n

    src = Counting(5 * 1024 * 1024 + 3)
    out = io.BytesIO()
    w = PaxWriter(out)
    loc = w.add(ArchiveEntry("big", "file", size=5 * 1024 * 1024 + 3), src)
    w.close()
    assert src.max_request <= 1024 * 1024
    assert loc.size == 5 * 1024 * 1024 + 3
    entry, data = next(iter(PaxReader(io.BytesIO(out.getvalue()), expected={0: loc.sha256})))
    total = 0
    chunk = bytearray(65536)
    while n := data.readinto(chunk):
        total += n
    assert total == entry.size and data.verified


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b"])
def test_unsafe_member_paths_are_refused(bad):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo(bad), io.BytesIO(b""))
    with pytest.raises(UnsafePath):
        list(PaxReader(io.BytesIO(buf.getvalue())))
    with pytest.raises(UnsafePath):
        PaxWriter(io.BytesIO()).add(ArchiveEntry(bad, "file"), b"")


# ----------------------------------------------------------------------------- labels

def sample_header(**kw) -> BackupHeaderInfo:
    base = dict(
        backup_uuid=uuid.uuid4(), dataset="home", translator="filesystem",
        translator_version="1.0", level=0, created_ns=1_764_000_000_123_456_789,
        block_size=262144, data_tape_file=4,
    )
    base.update(kw)
    return BackupHeaderInfo(**base)


def test_header_round_trip_and_restore_text():
    info = sample_header()
    raw = encode_header(info)
    assert len(raw) % 512 == 0 and label_kind(raw) == "header"
    got = decode_header(raw)
    info.text = got.text
    assert got == info
    # A person reading the first bytes sees what it is and how to restore it.
    head = raw[:2000].decode("utf-8", "replace")
    assert head.startswith("EBM BACKUP HEADER\n")
    assert "mt -f /dev/nst0 fsf 4" in head
    assert "dd if=/dev/nst0 bs=262144 | tar -xvf -" in head
    assert "dataset:     home" in head


def test_incremental_encrypted_header_round_trip():
    parent = uuid.uuid4()
    info = sample_header(level=3, parent_uuid=parent, encrypted=True, compressed=True,
                         cipher="AES-256-GCM", kdf="scrypt", kdf_params={"n": 2**15, "r": 8, "p": 1},
                         salt=b"\x01" * 16, options={"chunk": 1048576})
    got = decode_header(encode_header(info))
    assert got.parent_uuid == parent and got.level == 3 and got.encrypted and got.compressed
    assert got.kdf_params == {"n": 2**15, "r": 8, "p": 1} and got.salt == b"\x01" * 16
    assert got.options == {"chunk": 1048576}
    assert "ENCRYPTED" in got.text and "tar -x" not in got.text
    assert "after its baseline" in got.text
    with pytest.raises(LabelError, match="parent"):
        encode_header(sample_header(level=1))


def test_header_errors_are_clear():
    raw = bytearray(encode_header(sample_header()))
    with pytest.raises(BadMagic, match="bad magic"):
        decode_header(b"\x00" * 512)
    with pytest.raises(BadMagic):
        decode_header(encode_trailer(BackupTrailerInfo(uuid.uuid4(), 0, "00" * 32)))
    flipped = bytearray(raw)
    flipped[len(b"EBM BACKUP HEADER\n") + 30] ^= 1  # inside the text
    with pytest.raises(LabelChecksumError, match="checksum mismatch"):
        decode_header(bytes(flipped))
    nul = raw.index(b"\x00")
    newer = bytearray(raw)
    newer[nul + 1 : nul + 3] = (2).to_bytes(2, "big")
    with pytest.raises(UnsupportedVersion, match="version 2"):
        decode_header(bytes(newer))
    with pytest.raises(LabelError):
        decode_header(bytes(raw[: nul + 40]))


def test_trailer_round_trip_with_index():
    index = [
        IndexEntry(path="a", kind="file", size=10, mtime_ns=5, mode=0o644, sha256="ab" * 32,
                   header_offset=0, data_offset=1024),
        IndexEntry(path="d", kind="dir", mode=0o755, header_offset=2048, data_offset=2560),
        IndexEntry(path="ü/s", kind="symlink", linkname="a", header_offset=2560, data_offset=3584),
        IndexEntry(path="gone", kind="file", deleted=True),
        IndexEntry(path="torn", kind="file", size=7, torn=True, header_offset=4096, data_offset=4608),
    ]
    uid = uuid.uuid4()
    info = BackupTrailerInfo.from_index(uid, index, stream_bytes=10240, stream_digest="cd" * 32,
                                        warnings=["torn kept changing"], extra={"volumes": ["A00001L8"]})
    assert (info.entry_count, info.file_count, info.dir_count, info.symlink_count) == (4, 2, 1, 1)
    assert (info.deleted_count, info.torn_count, info.data_bytes) == (1, 1, 17)
    raw = encode_trailer(info)
    assert label_kind(raw) == "trailer"
    got = decode_trailer(raw)
    info.text = got.text
    got.finished_ns = info.finished_ns
    assert got == info
    assert decode_trailer(raw, with_index=False).index == []
    bad = bytearray(raw)
    bad[-600] ^= 0xFF
    with pytest.raises(LabelError):
        decode_trailer(bytes(bad))


def test_large_index_compresses():
    index = [IndexEntry(path=f"dir{i // 100}/file{i}", kind="file", size=i, mtime_ns=i * 1000,
                        mode=0o644, sha256=f"{i:064x}", header_offset=i * 1536, data_offset=i * 1536 + 1024)
             for i in range(5000)]
    raw = encode_trailer(BackupTrailerInfo.from_index(uuid.uuid4(), index, stream_bytes=1, stream_digest="00" * 32))
    raw_json = sum(len(json.dumps(e.to_json())) for e in index)
    assert len(raw) < raw_json / 3
    assert decode_trailer(raw).index == index


def test_label_struct_is_construct_defined():
    raw = encode_header(sample_header())
    parsed = BACKUP_HEADER.parse(raw)
    assert parsed.signed.value.format_version == 1
    assert parsed.signed.value.body.dataset == "home"


# ----------------------------------------------------------------------------- fuzzing

def _sample_archive():
    items = [
        (ArchiveEntry("d", "dir", mtime_ns=1_700_000_000_000_000_001), None),
        (ArchiveEntry("d/" + "f" * 120, "file", size=700, xattrs={"user.x": b"1"}), b"q" * 700),
        (ArchiveEntry("s", "file", size=1 << 20, sparse_map=[(4096, 10)]), b"0123456789"),
        (ArchiveEntry("l", "symlink", linkname="d"), None),
    ]
    return write_archive(items, deletions=["gone"])


_FUZZ_ARCHIVE, _FUZZ_LOCS = _sample_archive()


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, len(_FUZZ_ARCHIVE) - 1), st.integers(1, 255)),
                      min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, len(_FUZZ_ARCHIVE))))
def test_damaged_streams_fail_only_with_archive_errors(flips, cut):
    """Any damage either leaves the content intact (padding bytes) or raises ArchiveError."""
    from tape_formats.archive import ArchiveError

    bad = bytearray(_FUZZ_ARCHIVE)
    for pos, x in flips:
        bad[pos] ^= x
    if cut is not None:
        bad = bad[:cut]
    expected = {loc.header_offset: loc.sha256 for loc in _FUZZ_LOCS if loc.sha256}
    try:
        got = [(e.path, e.deleted, d.read()) for e, d in PaxReader(io.BytesIO(bytes(bad)), expected=expected)]
    except ArchiveError:
        return
    want = [(e.path, e.deleted, d.read()) for e, d in PaxReader(io.BytesIO(_FUZZ_ARCHIVE))]
    # Undetected damage may only touch what carries no content (padding, unused header bytes,
    # pax record values such as a time: tar has no checksum over those); file data never
    # changes silently, and the EBM compares member names with its index.
    assert [g[2] for g in got if not g[1]] == [w[2] for w in want if not w[1]]


_FUZZ_TRAILER = encode_trailer(BackupTrailerInfo.from_index(
    uuid.uuid4(), [IndexEntry(path=f"p{i}", kind="file", size=i, sha256="00" * 32) for i in range(50)],
    stream_bytes=1, stream_digest="11" * 32))


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, len(_FUZZ_TRAILER) - 1), x=st.integers(1, 255),
       cut=st.one_of(st.none(), st.integers(0, len(_FUZZ_TRAILER))))
def test_damaged_labels_fail_only_with_label_errors(pos, x, cut):
    for raw in (_FUZZ_TRAILER, encode_header(sample_header())):
        bad = bytearray(raw)
        if pos < len(bad):
            bad[pos] ^= x
        if cut is not None:
            bad = bad[:cut]
        decode = decode_trailer if raw is _FUZZ_TRAILER else decode_header
        try:
            decode(bytes(bad))
        except LabelError:
            continue
        # Undetected only if the damage hit the zero padding after the checksum.
        signed_len = len(raw.rstrip(b"\x00"))
        assert pos >= signed_len - 1 or (cut is not None and cut >= signed_len)


def test_non_utf8_names_are_binary_and_gnu_tar_extracts_them_exactly(tmp_path):
    """Linux names are bytes: a name that is not UTF-8 goes into the pax records raw, under
    ``hdrcharset=BINARY`` (POSIX), and GNU tar extracts the same bytes (it only notes that it
    does not know the keyword, which --warning=no-unknown-keyword silences)."""
    raw = "raw\udcff\udcfe"  # the bytes b"raw\xff\xfe", as os.fsdecode gives them
    names = [raw, "d/" + "n" * 150 + "\udce9", "caf\udce9", "caf\udce9/in", "ln", "utf8-é"]
    archive, _ = write_archive([
        (ArchiveEntry(raw, "file", size=2), b"ok"),
        (ArchiveEntry(names[1], "file", size=1), b"y"),
        (ArchiveEntry(names[2], "dir"), None),
        (ArchiveEntry(names[3], "file", size=1), b"z"),
        (ArchiveEntry("ln", "symlink", linkname="\udcff\udcfe/x"), None),
        (ArchiveEntry("utf8-é", "file", size=1), b"u"),
    ])
    assert archive.count(b"hdrcharset=BINARY") == 5  # not for the UTF-8 name
    (tmp_path / "a.tar").write_bytes(archive)
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run(["tar", "--warning=no-unknown-keyword", "-xf", str(tmp_path / "a.tar"),
                          "-C", str(out)], capture_output=True)
    assert res.returncode == 0 and res.stderr == b""
    assert open(bytes(out) + b"/raw\xff\xfe", "rb").read() == b"ok"
    assert open(bytes(out) + b"/d/" + b"n" * 150 + b"\xe9", "rb").read() == b"y"
    assert open(bytes(out) + b"/caf\xe9/in", "rb").read() == b"z"
    assert os.readlink(bytes(out) + b"/ln") == b"\xff\xfe/x"
    plain = subprocess.run(["tar", "-tf", str(tmp_path / "a.tar")], capture_output=True)
    assert plain.returncode == 0 and b"caf\\351/in\n" in plain.stdout  # GNU tar's escapes
    assert set(plain.stderr.splitlines()) == {
        b"tar: Ignoring unknown extended header keyword 'hdrcharset'"}
    got = [(e.path, e.linkname) for e, _ in PaxReader(io.BytesIO(archive))]
    assert [p for p, _ in got] == names and got[4][1] == "\udcff\udcfe/x"


def test_printable_path_escapes_what_a_terminal_cannot_show():
    assert printable_path("caf\udce9") == "caf\\xe9"
    assert printable_path("\udcff\udcfe") == "\\xff\\xfe"
    assert printable_path("a\nb\\c") == "a\\nb\\\\c"
    assert printable_path("café/plain") == "café/plain"
    for name in ("caf\udce9", "\udcff\udcfe", "a\nb\\c", "café/plain", "x\x01\x7fy", "a\\xe9"):
        assert parse_printable_path(printable_path(name)) == name


def test_pythons_tarfile_reads_our_archives_too():
    """A second, independent pax reader: names, sizes, link targets, xattrs and sparse data."""
    import tarfile

    items = [
        (ArchiveEntry("dir", "dir", mtime_ns=5), None),
        (ArchiveEntry("dir/" + "x" * 200, "file", size=5, xattrs={"user.k": b"v"}), b"hello"),
        (ArchiveEntry("sp", "file", size=1 << 20, sparse_map=[(4096, 3)]), b"abc"),
        (ArchiveEntry("sym", "symlink", linkname="dir"), None),
    ]
    archive, _ = write_archive(items, deletions=["old"])
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["dir", "dir/" + "x" * 200, "sp", "sym"]
        assert tf.extractfile(members[1]).read() == b"hello"
        assert members[1].pax_headers["SCHILY.xattr.user.k"] == "v"
        assert members[2].size == 1 << 20 and members[2].sparse == [(4096, 3), (1 << 20, 0)]
        assert members[3].issym() and members[3].linkname == "dir"
