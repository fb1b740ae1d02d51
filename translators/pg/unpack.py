"""Writing restored members into a directory that appears only when it is complete.

Everything goes into a hidden sibling (``.NAME.ebm-partial``) that is renamed over the
target at the end (``rename`` replaces an empty directory), and is removed on any failure, so
a failed restore leaves nothing half-written behind. As root, owners are restored as archived
(what GNU tar does), so a data directory belongs to the server's user again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, check_member_path
from translators.base import TranslatorError

CHUNK = 1 << 20


class StagedDir:
    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.ebm-partial"
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(mode=0o700, parents=True)
        self.bytes = 0
        self.files = 0
        self._as_root = os.geteuid() == 0

    def write(self, rel: str, entry: ArchiveEntry, data: EntryData | None) -> None:
        """Create ``rel`` (a member path below the staged directory) from ``entry``."""
        rel = check_member_path(rel)
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "dir":
            path.mkdir(exist_ok=True)
            os.chmod(path, entry.mode)
        elif entry.kind == "symlink":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.symlink(entry.linkname, path)
        elif entry.kind == "file":
            with open(path, "wb") as out:
                assert data is not None
                while chunk := data.read(CHUNK):
                    out.write(chunk)
                    self.bytes += len(chunk)
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
            self.files += 1
        else:
            raise TranslatorError(f"unexpected {entry.kind} member {entry.path!r}")
        if self._as_root:
            os.lchown(path, entry.uid, entry.gid)

    def commit(self) -> None:
        """Make the staged directory the target. Files are not fsynced one by one (as in the
        filesystem translator's restore): PostgreSQL fsyncs a data directory whose control
        file says it was not shut down cleanly (a base backup's) before it recovers, and a
        thousand fsyncs on a busy disk took 4.5 of a 6.7 s restore."""
        try:
            os.rename(self.path, self.target)
        except OSError as exc:
            raise TranslatorError(f"cannot put the restore in place at {self.target}: "
                                  f"{exc.strerror}") from None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
