"""The backup controller: checks requests and keeps schedules.

A request names a dataset, its translator, a cartridge pool and options; it is refused with a
one-line reason before any cartridge is touched. Schedules are kept in the catalog as text and
run by ``ebm scheduler`` (a loop, or ``--once`` from the shipped systemd timer), so a schedule
survives restarts and is visible to every process.

Schedule forms (local time):
- ``hourly`` / ``daily`` (00:00) / ``weekly`` (Monday 00:00)
- ``daily at HH:MM``, ``hourly at :MM``, ``weekly on DAY at HH:MM``
- ``every N minutes`` / ``every N hours``
- systemd ``OnCalendar`` forms: ``Mon..Fri *-*-* 02:00``, ``*-*-01 03:30``, ``Sat,Sun 10:00``
  (day of week AND date, as systemd; the year ``*``, whole minutes)
- cron: five fields ``M H DOM MON DOW`` or a macro (``@daily``, ``@weekly``, ``@hourly`` ...),
  with cron's own semantics (day-of-month OR day-of-week when both are restricted, names like
  ``mon``, ``jan``), computed by croniter
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RequestError(Exception):
    """A bad request or schedule; the message is one line."""


DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass
class BackupRequest:
    """What a caller asks for; ``validate`` refuses anything unusable."""

    dataset: str
    source: Path | None = None
    translator: str | None = None
    pool: str | None = None
    full: bool = False
    encrypt: bool = False
    passphrase_file: Path | None = None
    key_file: Path | None = None
    verify: bool = False
    compress: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    # retention applied after a good backup: keep_last / keep_daily / keep_weekly / keep_monthly
    retention: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.dataset or not re.fullmatch(r"[A-Za-z0-9_.:-]+", self.dataset) or self.dataset.isdigit():
            raise RequestError(f"bad dataset name {self.dataset!r} (letters, digits, _ . : - only)")
        if self.encrypt and not (self.passphrase_file or self.key_file
                                 or os.environ.get("EBM_PASSPHRASE")):
            raise RequestError("--encrypt needs --passphrase-file, --key-file or $EBM_PASSPHRASE")
        if self.passphrase_file and self.key_file:
            raise RequestError("give --passphrase-file or --key-file, not both")
        for f in (self.passphrase_file, self.key_file):
            if f is not None and not Path(f).is_file():
                raise RequestError(f"no such file: {f}")
        for k, v in self.retention.items():
            if k not in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
                raise RequestError(f"unknown retention rule {k!r}")
            if not isinstance(v, int) or v < 0:
                raise RequestError(f"retention {k} must be a non-negative integer")


# -- schedules ----------------------------------------------------------------------------
def _hm(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise RequestError(f"bad time {text!r} (want HH:MM)")
    return int(m[1]), int(m[2])


def parse_schedule(spec: str) -> Callable[[dt.datetime], dt.datetime]:
    """Return a function next(after: datetime) -> datetime; RequestError if unparsable."""
    s = " ".join(spec.lower().split())
    m = re.fullmatch(r"every (\d+) (minute|minutes|hour|hours)", s)
    if m:
        n = int(m[1])
        if n < 1:
            raise RequestError("the interval must be at least 1")
        delta = dt.timedelta(minutes=n) if m[2].startswith("minute") else dt.timedelta(hours=n)
        return lambda after: after.replace(second=0, microsecond=0) + delta
    if s in ("hourly", "daily", "weekly"):
        s = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 1"}[s]
    elif (m := re.fullmatch(r"hourly at :(\d{2})", s)):
        s = f"{int(m[1])} * * * *"
    elif (m := re.fullmatch(r"daily at (\S+)", s)):
        h, mi = _hm(m[1])
        s = f"{mi} {h} * * *"
    elif (m := re.fullmatch(r"weekly on (\w+) at (\S+)", s)):
        day = DAYS.get(m[1][:3])
        if day is None:
            raise RequestError(f"bad weekday {m[1]!r}")
        h, mi = _hm(m[2])
        s = f"{mi} {h} * * {(day + 1) % 7}"
    elif _looks_like_calendar(s):
        return _cron(spec, _calendar_to_cron(spec, s), day_or=False)
    return _cron(spec, s)


_CAL_FIELD = r"[0-9*.,/]+"
_CALENDAR_RE = re.compile(
    rf"(?:(?P<dow>[a-z.,]+) )?(?:(?P<date>{_CAL_FIELD}-{_CAL_FIELD}(?:-{_CAL_FIELD})?) ?)?"
    rf"(?P<time>{_CAL_FIELD}:{_CAL_FIELD}(?::{_CAL_FIELD})?)?")


def _looks_like_calendar(s: str) -> bool:
    """systemd OnCalendar rather than cron: at most three parts, a HH:MM or a Y-M-D in them."""
    return len(s.split()) <= 3 and bool(re.search(r"\d:\d|[\d*]-[\d*]", s))


def _calendar_values(text: str, lo: int, hi: int) -> str:
    """One OnCalendar component (``*``, ``1,15``, ``1..5``, ``0/15``) as a cron field."""
    parts = []
    for part in text.split(","):
        value, _, step = part.partition("/")
        value = value.replace("..", "-")
        if step:
            value = f"{lo if value == '*' else value}-{hi}" if "-" not in value else value
            value += f"/{step}"
        parts.append(value)
    return ",".join(parts)


def _calendar_to_cron(spec: str, s: str) -> str:
    """A systemd OnCalendar expression (``Mon..Fri *-*-* 02:00``, ``*-*-01 03:30``,
    ``Sat,Sun 10:00``) as the cron line with the same instants; day-of-week and date are
    AND-ed there, as systemd does. Years and seconds other than 0 are refused."""
    m = _CALENDAR_RE.fullmatch(s)
    if not m or not (m["date"] or m["time"]):
        raise RequestError(f"bad calendar schedule {spec!r} (e.g. 'Mon..Fri *-*-* 02:00')")
    date = (m["date"] or "*-*-*").split("-")
    if len(date) == 2:
        date = ["*", *date]
    if date[0] != "*":
        raise RequestError(f"schedule {spec!r}: a year other than * is not supported")
    clock = (m["time"] or "00:00").split(":")
    if len(clock) == 3 and clock[2].lstrip("0") not in ("", "*"):
        raise RequestError(f"schedule {spec!r}: schedules run on whole minutes")
    dow = "*"
    if m["dow"]:
        dow = ",".join(p.replace("..", "-") for p in m["dow"].split(","))
    return " ".join((_calendar_values(clock[1], 0, 59), _calendar_values(clock[0], 0, 23),
                     _calendar_values(date[2], 1, 31), _calendar_values(date[1], 1, 12), dow))


def _cron(spec: str, expr: str, day_or: bool = True) -> Callable[[dt.datetime], dt.datetime]:
    """Cron's own semantics through croniter (a maintained library, imported only here:
    start-up stays fast): a day matches when day-of-month OR day-of-week does if both are
    restricted (``day_or``; systemd calendars AND them), names (``mon``, ``jan``) and
    ``@daily``-style macros work."""
    from croniter import CroniterBadDateError, croniter

    if len(expr.split()) not in (1, 5) or not croniter.is_valid(expr):
        raise RequestError(
            f"bad schedule {spec!r} (try 'hourly', 'daily at 03:00', 'weekly on sun at 02:00', "
            "'every 15 minutes', '@daily' or a 5-field cron line such as '0 3 * * mon-fri')")

    def nxt(after: dt.datetime) -> dt.datetime:
        try:
            return croniter(expr, after.replace(second=0, microsecond=0),
                            day_or=day_or).get_next(dt.datetime)
        except (CroniterBadDateError, StopIteration):
            raise RequestError(f"schedule {spec!r} never fires") from None

    nxt(dt.datetime.now())  # one that never fires is refused when it is added
    return nxt


def next_run(spec: str, after: float) -> float:
    return parse_schedule(spec)(dt.datetime.fromtimestamp(after)).timestamp()
