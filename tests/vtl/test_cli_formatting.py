"""Sizes, rates, durations, times and modes read the same from ``vtl`` and ``ebm`` (one
module prints them): binary units, ISO 8601 times with the offset, modes as four octal
digits."""

from __future__ import annotations

import re

import pytest

from vtl.cli import formatting as fmt
from vtl.cli.errors import CliError

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def test_sizes() -> None:
    assert [fmt.human_size(n) for n in (None, 0, 1023, 1024, 64 * 2**20, 3 * 2**40, 2**60)] == [
        "-", "0 B", "1023 B", "1.0 KiB", "64.0 MiB", "3.0 TiB", "1024.0 PiB"]
    assert fmt.parse_size("64MiB") == fmt.parse_size("64M") == 64 * 2**20
    assert fmt.parse_size("500MB") == 500 * 10**6 and fmt.parse_size("1048576") == 2**20
    for bad in ("lots", "0", "5iB", "-1K"):
        with pytest.raises(CliError):
            fmt.parse_size(bad)


def test_durations_and_times() -> None:
    assert [fmt.human_duration(s) for s in (None, 4.25, 59.94, 125, 7500, 90000)] == [
        "-", "4.2s", "59.9s", "2m 05s", "2h 05m", "1d 01h"]
    assert fmt.human_time(None) == fmt.human_time(0) == "-" and fmt.iso_time(None) is None
    assert ISO.match(fmt.human_time(1_700_000_000)) and fmt.human_time(1_700_000_000) == fmt.iso_time(
        1_700_000_000.7)
    assert fmt.iso_time(1_700_000_000.25, "milliseconds").count(".250") == 1


def test_rates_and_modes() -> None:
    assert [fmt.human_rate(r) for r in (None, 0, 12.5 * 2**20)] == ["-", "0 B/s", "12.5 MiB/s"]
    assert [fmt.mode_text(m) for m in (0o100644, 0o40755, 0o104755, 0o1777, 0)] == [
        "0644", "0755", "4755", "1777", "0000"]


def test_log_lines_carry_iso_times() -> None:
    import logging

    from vtl.logs import TerminalFormatter

    line = TerminalFormatter().format(logging.LogRecord("vtl.x", logging.INFO, "f", 1, "hi",
                                                        None, None))
    stamp, rest = line.split(" ", 1)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", stamp)
    assert rest == "INFO vtl.x: hi"
