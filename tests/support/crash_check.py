"""The check after each kill of a crash test: the cartridge reopens and every object on it
reads back as the writer made it (filemarks every ``every`` objects, data otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tape_formats.cartridge import RecordKind, TapeCartridge


def check_tape(path: Path, every: int, expected_block: Callable[[int], bytes]) -> int:
    """Open ``path`` read-write (a torn tail is cut), read it all; returns its EOD."""
    with TapeCartridge.open(path, count_load=False) as c:
        for obj in range(c.eod):
            r = c.read_block()
            if obj % every == every - 1:
                assert r.kind is RecordKind.FILEMARK, obj
            else:
                assert r.kind is RecordKind.DATA and bytes(r.data) == expected_block(obj), obj
        assert c.read_block().kind is RecordKind.EOD
        return c.eod
