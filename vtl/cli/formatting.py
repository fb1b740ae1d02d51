"""Sizes, rates, durations, times and file modes as both CLIs (``vtl`` and ``ebm``), the
status page and the progress bars print them, and sizes as they parse them.

One module, so that ``64.0 MiB``, ``12.5 MiB/s``, ``2m 05s``, ``2026-12-03T15:50:00+00:00``
or ``0644`` reads the same whichever command printed it, in a table, a progress line or a
summary. Binary units for every size and rate we print (MiB = 2**20 bytes: a cartridge's
capacity is a power of two), never decimal MB; both kinds accepted on input (``64MiB`` and
``64M`` are binary, ``64MB`` decimal, as the admin wrote it). Times are ISO 8601 with the
local offset, to the second, in human output and ``--json`` alike. Imports nothing heavy:
``--help`` loads it.
"""

from __future__ import annotations

import re
import stat
from datetime import datetime

from vtl.cli.errors import CliError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*$", re.IGNORECASE)


def human_size(n: int | None) -> str:
    """``67108864`` -> ``64.0 MiB``; ``None`` (unknown) -> ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """``64MiB``, ``64M`` (binary), ``64MB`` (decimal), ``1048576`` -> bytes; CliError else."""
    m = _SIZE_RE.match(text)
    bad = CliError(f"bad size {text!r} (e.g. 64MiB, 1GiB, 500MB, 1048576)")
    if not m:
        raise bad
    number, unit, tail = float(m.group(1)), m.group(2).upper(), m.group(3).lower()
    if not unit and tail:
        raise bad
    power = " KMGTP".index(unit) if unit else 0
    base = 1000 if tail == "b" else 1024
    value = int(number * base**power)
    if value <= 0:
        raise CliError(f"size must be positive, not {text!r}")
    return value


def human_duration(seconds: float | None) -> str:
    """``4.25`` -> ``4.2s``; ``125`` -> ``2m 05s``; ``7500`` -> ``2h 05m``; None -> ``-``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def human_rate(bytes_per_second: float | None) -> str:
    """``13107200.0`` -> ``12.5 MiB/s`` (the unit of :func:`human_size`); None -> ``-``."""
    if bytes_per_second is None:
        return "-"
    return f"{human_size(int(bytes_per_second))}/s"


def iso_time(epoch: float | None, timespec: str = "seconds") -> str | None:
    """Seconds since the epoch as ISO 8601 with the local offset, to the second
    (``2026-12-03T15:50:00+00:00``; a log line: ``timespec="milliseconds"``); None or 0
    (never) -> None (``null`` in JSON)."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec=timespec)


def human_time(epoch: float | None) -> str:
    """:func:`iso_time` for a table cell: ``-`` when there is no time."""
    return iso_time(epoch) or "-"


def mode_text(mode: int) -> str:
    """The permission bits of ``st_mode`` as four octal digits (``0o100644`` -> ``0644``;
    setuid, setgid and sticky in the first), as ``ebm ls``, ``find`` and ``diff`` print them
    and ``--json`` gives them (the file type is the entry's ``kind``)."""
    return f"{stat.S_IMODE(mode):04o}"
