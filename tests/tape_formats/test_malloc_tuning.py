"""The write path's malloc thresholds: set once per process, never over the operator's."""

from __future__ import annotations

import platform

import pytest

from tape_formats import malloc_tuning
from tape_formats.write_behind import WriteBehind


def test_set_once_unless_the_environment_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc_tuning, "_done", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert malloc_tuning.keep_freed_memory() is False  # the operator's setting stands
    monkeypatch.setattr(malloc_tuning, "_done", False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    glibc = platform.libc_ver()[0] == "glibc"
    assert malloc_tuning.keep_freed_memory() is glibc
    assert malloc_tuning.keep_freed_memory() is False  # once


def test_a_write_buffer_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr("tape_formats.write_behind.keep_freed_memory",
                        lambda: calls.append(1))
    wb = WriteBehind(lambda: (lambda data, compress: data), lambda n, p: None, 1 << 20, "t")
    wb.close()
    assert calls == [1]
