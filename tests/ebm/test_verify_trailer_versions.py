"""``ebm verify`` and restore on both trailer versions: version 2 (the member digest, written
now) and version 1 (the plain sha256 of the whole stream, as every earlier backup has it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, write_tree

import ebm.manager
import ebm.verify
from ebm.controller import BackupRequest
from ebm.manager import load_translator
from ebm.restore import restore
from ebm.verify import verify_backup
from tape_formats.archive import BackupTrailerInfo, PaxWriter


class _PlainSha256Writer(PaxWriter):
    """A PaxWriter as it was before the member digest: its stream digest is the sha256 of
    every byte it writes."""

    def __init__(self, out, **kw) -> None:
        self._plain = hashlib.sha256()

        class _Tee:
            def write(_self, b) -> int:
                self._plain.update(b)
                return out.write(b)

        super().__init__(_Tee(), **kw)

    def stream_digest(self) -> str:
        return self._plain.hexdigest()


def _write_old_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backups from here on get a version 1 trailer with the plain stream sha256."""
    new = BackupTrailerInfo.from_index

    def v1(*args, **kw) -> BackupTrailerInfo:
        info = new(*args, **kw)
        info.format_version = 1
        return info

    monkeypatch.setattr(BackupTrailerInfo, "from_index", staticmethod(v1))
    monkeypatch.setattr(ebm.manager, "_pax_writer", lambda out: _PlainSha256Writer(out, start_offset=0))


@pytest.mark.parametrize("old", [False, True], ids=["v2-member-digest", "v1-plain-sha256"])
def test_verify_and_restore_either_trailer_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    old: bool) -> None:
    ebm_ = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"a": os.urandom(300_000), "d/b": b"text " * 1000, "e": b""})
    if old:
        _write_old_way(monkeypatch)
    b = ebm_.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    monkeypatch.undo()
    vr = verify_backup(ebm_.catalog, ebm_.library, b)
    assert vr.ok, vr.problems
    restore(ebm_.catalog, ebm_.library, load_translator, b, tmp_path / "r")
    assert manifest(tmp_path / "r") == manifest(src)
    restore(ebm_.catalog, ebm_.library, load_translator, b, tmp_path / "one", ["d/b"])
    assert (tmp_path / "one/d/b").read_bytes() == b"text " * 1000
    # no readable trailer: the stream still checks out (both digest kinds computed)
    monkeypatch.setattr(ebm.verify, "parse_trailer", lambda raw: None)
    vr = verify_backup(ebm_.catalog, ebm_.library, b)
    assert vr.problems == [f"backup {b.uuid}: no valid trailer on cartridge {barcodes(1)[0]}"]
    monkeypatch.undo()
    # a catalog digest that is neither kind of the stream's: verify names it
    ebm_.catalog.db.execute("UPDATE ebm_backups SET sha256=? WHERE id=?", ("00" * 32, b.id))
    vr = verify_backup(ebm_.catalog, ebm_.library, ebm_.catalog.backup(b.uuid))
    assert not vr.ok
    assert any("stream digest differs from the catalog" in p for p in vr.problems)
    assert any("trailer size/digest differ from the catalog" in p for p in vr.problems)
    ebm_.close()
