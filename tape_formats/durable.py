"""Making a directory's changes durable: after a file is created, renamed or removed in a
folder, the entry itself survives a crash only once the folder is fsynced too.
It never writes file data; the callers decide what to sync and when."""

from __future__ import annotations

import os


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync the directory ``folder``: its entries (creations, renames, removals) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
