"""Sizes, durations and times as both CLIs (``vtl`` and ``ebm``) print and parse them.

One module, so that ``64.0 MiB`` or ``2m 05s`` reads the same whichever command printed it.
Binary units for what we print (a cartridge's capacity is a power of two); both kinds accepted
on input (``64MiB`` and ``64M`` are binary, ``64MB`` decimal, as the admin wrote it).
"""

from __future__ import annotations

import re
import time

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


def human_time(epoch: float | None) -> str:
    """Local wall-clock time, to the second (``2026-12-03 14:05:09``); None or 0 -> ``-``."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
