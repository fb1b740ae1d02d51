"""Helpers for translator tests: a backup into an in-memory pax stream, and reading it back."""

from __future__ import annotations

import io

from tape_formats.archive import PaxReader, PaxWriter


def run_backup(translator, source, state=None):
    """``translator.backup(source, state)`` into memory: (the pax bytes, the BackupResult)."""
    buf = io.BytesIO()
    w = PaxWriter(buf)
    result = translator.backup(str(source), state, w)
    w.close()
    return buf.getvalue(), result


def entries(archive: bytes) -> PaxReader:
    return PaxReader(io.BytesIO(archive))
