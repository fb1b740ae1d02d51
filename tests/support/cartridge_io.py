"""Writing and reading a library's cartridge the way a backup does, for store tests: load it
into drive 0, write tape files (each ended by a filemark), unload; read data blocks back."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tape_formats.cartridge import RecordKind, TapeCartridge
from vtl.library import Library


def write_tape_files(root: Path, barcode: str, files: list[list[bytes]], *,
                     append: bool = False) -> None:
    """Each list of blocks as one tape file, through drive 0 of the library at ``root``
    (from the beginning of the tape, or with ``append`` after what it holds)."""
    lib = Library.open(root)
    try:
        lib.load(barcode, 0)
        cart = lib.drives[0].mount()
        if append:
            cart.space_to_eod()
        for blocks in files:
            for block in blocks:
                cart.write_block(block)
            cart.write_filemarks(1)
        lib.unload(0)
    finally:
        lib.close()


def mixed_objects(seed: int, count: int, sizes: list[int], text: bytes,
                  marks: dict[int, int]) -> list[bytes | int]:
    """``count`` blocks of ``sizes`` in turn, every third one a slice of ``text`` (stored
    compressed), the others random (stored as is), with ``marks[i]`` filemarks (an int) after
    block ``i``."""
    rnd = random.Random(seed)
    out: list[bytes | int] = []
    for i in range(count):
        n = sizes[i % len(sizes)]
        out.append(rnd.randbytes(n) if i % 3 else text[i:i + n])
        if i in marks:
            out.append(marks[i])
    return out


def write_objects(cart: TapeCartridge, objects: Iterable[bytes | int]) -> list[int]:
    """Blocks (bytes) and runs of filemarks (ints: how many) from the cartridge's position,
    synced once at the end; the record numbers of the index's data records."""
    for obj in objects:
        if isinstance(obj, int):
            cart.write_filemarks(obj, sync=False)
        else:
            cart.write_block(obj)
    cart.sync()
    idx = cart.index
    return [r for r in range(idx.records) if idx.meta[r] & 0xFF == 1]


def read_blocks(cart: TapeCartridge, *, to_filemark: bool = False) -> list[bytes]:
    """The data blocks from the cartridge's position to end of data (or the next filemark)."""
    got = []
    while (rec := cart.read_block()).kind is not RecordKind.EOD:
        if rec.kind is RecordKind.DATA:
            got.append(bytes(rec.data))
        elif to_filemark:
            break
    return got


def read_cartridge(root: Path, barcode: str) -> list[bytes]:
    """Every data block of a cartridge of the library at ``root``, opened read-only."""
    lib = Library.open(root, readonly=True)
    try:
        cart = lib.open_readonly(barcode)
        try:
            return read_blocks(cart)
        finally:
            cart.close()
    finally:
        lib.close()


def new_dedup_cartridge(folder: Path, barcode: str, store: Path, *,
                        sparse: bool = False) -> Path:
    """A new dedup cartridge ``<folder>/<barcode>.vtape`` (64 MiB) on the chunk store
    ``store``; ``sparse``: with the skeleton layout of an older vtl (a ``VTLRCP1`` recipe,
    the file at full size with payloads as holes), which the store keeps reading and
    appending to."""
    from tape_formats.media import MEDIA
    from tape_formats.store import recipe as recipes
    from tape_formats.store.medium import recipe_path

    folder.mkdir(exist_ok=True)
    path = folder / f"{barcode}.vtape"
    TapeCartridge.create(path, barcode, MEDIA["LTO-8"], capacity=64 << 20, chunk_store=store)
    if sparse:  # the header alone: the same bytes in either layout, so only the recipe differs
        recipes.write_new(recipe_path(path), recipes.load(recipe_path(path)).store, [], [])
    return path


def check_failed_writes_not_acknowledged(path: Path, durable: list[bytes],
                                         more: list[bytes], fail: Callable[[], None],
                                         undo: Callable[[], None]) -> None:
    """``durable`` written up to a filemark, then, with ``fail()`` in force, ``more``
    appended: a later write or the filemark raises OSError (never acknowledged), a second
    filemark too (the error stays until close); after ``undo()`` the cartridge reads back
    with ``durable`` first."""
    with TapeCartridge.open(path) as c:
        for b in durable:
            c.write_block(b)
        c.write_filemarks(1)
    fail()
    c = TapeCartridge.open(path)
    c.space_to_eod()
    with pytest.raises(OSError):
        for b in more:
            c.write_block(b)
        c.write_filemarks(1)
    with pytest.raises(OSError):
        c.write_filemarks(1)
    try:
        c.close()
    except OSError:
        pass
    undo()
    with TapeCartridge.open(path, readonly=True) as c:
        assert read_blocks(c)[:len(durable)] == durable
