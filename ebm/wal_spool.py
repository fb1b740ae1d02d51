"""The prefetch spool of ``ebm wal-fetch``, and the restore_command entry that serves from it.

Recovery asks ``restore_command`` for one WAL file at a time, in order. Reading each from
tape in its own process costs a drive claim, a LOCATE and a catalog per segment; so
:func:`ebm.wal_fetch.fetch`, asked for segment N, reads N and the next segments of the same
backup in the same tape pass and puts them here, each sha256-checked as it was read, fsynced
and renamed into place (a name in the spool is always a whole, verified segment). The next
calls are then a rename out of the spool and nothing else.

Where: ``pg_wal/ebm-prefetch/<backup uuid>/`` of the restored data directory (``%p``'s
directory), unless ``--spool DIR`` names another place. Inside ``pg_wal`` it is always
writable by the server's user, on the file system of ``%p`` (handing a segment over is a
hard link, no copy), and ignored by PostgreSQL: only WAL file names in ``pg_wal`` are its own,
and base backups of the restored server skip ``pg_wal``'s contents. The uuid level keeps a
spool of one backup's chain from ever serving another's.

``ebm restore`` leaves ``.chain`` there, the names of every WAL file the chain holds (the
first tape pass writes it too when it is missing), so the light entry answers "not in the
chain" (exit 1) itself: recovery asks for history files and the segment before its start
when it begins, and for the segment after the last and the next timeline's history file
when it ends; each such answer used to start the ``ebm`` CLI.

Lifetime: a segment leaves the spool when a later one is handed over (recovery asks for the
segment it ended in again when it promotes, and a hard link hands it over twice without the
tape); the rest goes at the end of recovery (``recovery_end_command``, :mod:`translators.pg.recovery`), or when the CLI answers
"not in the chain", so nothing outlives the recovery. The spool is only a cache: whatever is
missing from it is read from tape again.

This module is the start of every restore_command call (``python -m ebm.wal_spool ARGS``,
ARGS being ``ebm``'s own command line), so it imports nothing beyond ``os``, ``sys`` and
``tape_formats.durable`` (``os`` alone) until it knows the file is not in the spool; then it
runs ``ebm`` with ARGS.
"""

from __future__ import annotations

import contextlib
import os
import sys

from tape_formats.durable import fsync_dir

SPOOL_DIR = "ebm-prefetch"  # in pg_wal, beside %p
PART = ".part"
CHAIN = ".chain"  # the WAL file names the chain holds, one a line


def spool_root(dest: str, spool: str | None = None) -> str:
    """The spool directory for ``%p`` = ``dest`` (``--spool`` wins when given)."""
    return spool or os.path.join(os.path.dirname(os.path.abspath(dest)), SPOOL_DIR)


class WalSpool:
    """One backup chain's prefetched WAL files: ``root/<uuid>/<name>``."""

    def __init__(self, root: str, uuid: str) -> None:
        self.root = root
        self.path = os.path.join(root, uuid)

    def take(self, name: str, dest: str) -> bool:
        """Hand WAL file ``name`` over at ``dest`` (durably); False when the spool lacks it.

        A hard link, no copy; the spool keeps the segment until a later one is taken, since
        recovery asks for the segment it ended in once more when it promotes."""
        if not _plain_name(name):
            return False
        src = os.path.join(self.path, name)
        tmp = os.path.join(os.path.dirname(os.path.abspath(dest)),
                           f".{os.path.basename(dest)}.ebm-link")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.link(src, tmp)
            os.replace(tmp, dest)
        except FileNotFoundError:
            return False
        except OSError:  # another file system (EXDEV), or a spool we cannot link from
            if not os.path.isfile(src):
                return False
            _copy(src, dest)
        fsync_dir(os.path.dirname(os.path.abspath(dest)))
        self._drop_before(name)
        return True

    def _drop_before(self, name: str) -> None:
        """Remove the spooled segments before ``name``: recovery has gone past them."""
        with contextlib.suppress(OSError):
            for other in os.listdir(self.path):
                if len(other) == len(name) == 24 and other < name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.path, other))

    def create(self) -> bool:
        """Make the directory (mode 0700); False when it cannot be made (no prefetch)."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError:
            return False
        return True

    def part(self, name: str) -> str:
        """Where a segment is written before :meth:`publish` gives it its name."""
        return os.path.join(self.path, f".{name}{PART}")

    def publish(self, names: list[str]) -> None:
        """Give the written and fsynced ``.part`` files their names, then make the renames
        durable: only a complete segment is ever found under its name."""
        for name in names:
            os.replace(self.part(name), os.path.join(self.path, name))
        fsync_dir(self.path)

    def write_chain(self, names: list[str]) -> None:
        """Record the chain's WAL file names (once; a cache like the segments)."""
        path = os.path.join(self.path, CHAIN)
        if not os.path.exists(path):
            with open(path + PART, "w") as f:
                f.write("".join(n + "\n" for n in names))
            os.replace(path + PART, path)

    def in_chain(self, name: str) -> bool | None:
        """Whether the chain holds WAL file ``name``; None when no pass has said yet."""
        try:
            with open(os.path.join(self.path, CHAIN)) as f:
                return name in f.read().split("\n")
        except OSError:
            return None

    def discard(self) -> None:
        """Remove this chain's spool, and the spool root if it is then empty."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                os.unlink(os.path.join(self.path, name))
            os.rmdir(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.root)


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".")


def _copy(src: str, dest: str) -> None:
    tmp = os.path.join(os.path.dirname(os.path.abspath(dest)),
                       f".{os.path.basename(dest)}.ebm-partial")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _request(args: list[str]) -> tuple[WalSpool, str, str] | None:
    """(spool, ``%f``, ``%p``) of restore_command's ``ebm`` command line ``... wal-fetch UUID
    [options] %f %p``; None for any other command line."""
    if "wal-fetch" not in args or len(args) < args.index("wal-fetch") + 4:
        return None
    uuid, name, dest = args[args.index("wal-fetch") + 1], args[-2], args[-1]
    spool = args[args.index("--spool") + 1] if "--spool" in args[:-3] else None
    return WalSpool(spool_root(dest, spool), uuid), name, dest


def serve(args: list[str]) -> bool:
    """Hand WAL file ``%f`` over from the spool if it is there."""
    req = _request(args)
    try:
        return req is not None and req[0].take(req[1], req[2])
    except OSError:
        return False  # the tape path then fetches it, or says why it cannot


def absent(args: list[str]) -> bool:
    """Whether the spool's ``.chain`` says the chain has no WAL file ``%f``."""
    req = _request(args)
    return req is not None and _plain_name(req[1]) and req[0].in_chain(req[1]) is False


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if serve(args):
        sys.exit(0)
    if absent(args):  # restore_command's "not in the archive"
        sys.stderr.write(f"ebm wal-fetch: {args[-2]} is not in the chain\n")
        sys.exit(1)
    from ebm.cli import app

    app(args=args, prog_name="ebm")


if __name__ == "__main__":
    main()
