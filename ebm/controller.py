"""The backup controller: checks requests and keeps schedules.

A request names a dataset, its translator, a cartridge pool and options; it is refused with a
one-line reason before any cartridge is touched. Schedules are kept in the catalog as text and
run by ``ebm scheduler`` (a loop, or ``--once`` from the shipped systemd timer), so a schedule
survives restarts and is visible to every process.

Schedule forms (local time):
- ``hourly`` / ``daily`` (00:00) / ``weekly`` (Monday 00:00)
- ``daily at HH:MM``, ``hourly at :MM``, ``weekly on DAY at HH:MM``
- ``every N minutes`` / ``every N hours``
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
    return _cron(spec, s)


def _cron(spec: str, expr: str) -> Callable[[dt.datetime], dt.datetime]:
    """Cron's own semantics through croniter (a maintained library, imported only here:
    start-up stays fast): a day matches when day-of-month OR day-of-week does if both are
    restricted, names (``mon``, ``jan``) and ``@daily``-style macros work."""
    from croniter import CroniterBadDateError, croniter

    if len(expr.split()) not in (1, 5) or not croniter.is_valid(expr):
        raise RequestError(
            f"bad schedule {spec!r} (try 'hourly', 'daily at 03:00', 'weekly on sun at 02:00', "
            "'every 15 minutes', '@daily' or a 5-field cron line such as '0 3 * * mon-fri')")

    def nxt(after: dt.datetime) -> dt.datetime:
        try:
            return croniter(expr, after.replace(second=0, microsecond=0)).get_next(dt.datetime)
        except (CroniterBadDateError, StopIteration):
            raise RequestError(f"schedule {spec!r} never fires") from None

    nxt(dt.datetime.now())  # one that never fires is refused when it is added
    return nxt


def next_run(spec: str, after: float) -> float:
    return parse_schedule(spec)(dt.datetime.fromtimestamp(after)).timestamp()
