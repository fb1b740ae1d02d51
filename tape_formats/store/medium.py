"""The medium file: the few positional file operations a cartridge does on its data.

``PlainMedium`` is the cartridge file itself: each operation is the os call on the file
descriptor, bound once (``functools.partial`` of a builtin adds no Python frame), so the
plain store's per-block path costs what it did before the seam. ``open_medium`` picks the
dedup medium when the cartridge has a recipe sidecar (``<cartridge>.recipe``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Protocol


class MediumFile(Protocol):
    """What a cartridge needs from the place its bytes live. Offsets are the cartridge
    file's offsets in every store; ``fd`` is the skeleton/file descriptor (flock, pacing)."""

    fd: int
    #: True when the store compresses (per chunk): the cartridge then stores blocks as they are.
    compresses: bool
    #: True when the cartridge's records are written to ``fd`` at their offsets, so the
    #: cartridge paces the file's write-back (writeback_pacing.py).
    paced: bool

    def pread(self, n: int, offset: int) -> bytes: ...
    def preadv(self, buffers: list, offset: int) -> int: ...
    def pwrite(self, data: bytes | memoryview, offset: int) -> int: ...
    def pwritev(self, buffers: list, offset: int) -> int: ...
    def truncate(self, length: int) -> None: ...
    def fsync(self) -> None: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class PlainMedium:
    """The cartridge file on the local disk, as it always was."""

    compresses = False
    paced = True

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pread = functools.partial(os.pread, fd)
        self.preadv = functools.partial(os.preadv, fd)
        self.pwrite = functools.partial(os.pwrite, fd)
        self.pwritev = functools.partial(os.pwritev, fd)
        self.truncate = functools.partial(os.ftruncate, fd)
        self.fsync = functools.partial(os.fsync, fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)


def recipe_path(cartridge: Path) -> Path:
    """The dedup recipe sidecar of a cartridge file (its presence makes it a dedup one)."""
    return cartridge.with_name(cartridge.name + ".recipe")


def open_medium(path: Path, fd: int, *, readonly: bool) -> MediumFile:
    """The medium of the cartridge file ``path`` opened as ``fd`` (which it then owns)."""
    recipe = recipe_path(path)
    if not recipe.exists():
        return PlainMedium(fd)
    from tape_formats.store.dedup_medium import DedupMedium

    return DedupMedium(fd, recipe, readonly=readonly)
