"""Sizes, durations and times read the same from ``vtl`` and ``ebm`` (one module prints them)."""

from __future__ import annotations

import pytest

from vtl.cli.errors import CliError
from vtl.cli.formatting import human_duration, human_size, human_time, parse_size


def test_sizes() -> None:
    assert [human_size(n) for n in (None, 0, 1023, 1024, 64 * 2**20, 3 * 2**40, 2**60)] == [
        "-", "0 B", "1023 B", "1.0 KiB", "64.0 MiB", "3.0 TiB", "1024.0 PiB"]
    assert parse_size("64MiB") == parse_size("64M") == 64 * 2**20
    assert parse_size("500MB") == 500 * 10**6 and parse_size("1048576") == 2**20
    for bad in ("lots", "0", "5iB", "-1K"):
        with pytest.raises(CliError):
            parse_size(bad)


def test_durations_and_times() -> None:
    assert [human_duration(s) for s in (None, 4.25, 59.94, 125, 7500, 90000)] == [
        "-", "4.2s", "59.9s", "2m 05s", "2h 05m", "1d 01h"]
    assert human_time(None) == human_time(0) == "-"
    assert len(human_time(1_700_000_000)) == len("2023-11-14 22:13:20")
