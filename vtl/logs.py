"""Log lines of long-running commands (``vtl serve``): on a terminal or file with their own
timestamps, in the journal without (journald stamps every line itself).

systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it connected to stderr; when
stderr is that stream the lines carry a syslog priority prefix (``<4>``, read by journald's
``SyslogLevelPrefix=``) instead of a time and a level name, so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd announced in ``$JOURNAL_STREAM``."""
    announced = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = announced.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """``<6>vtl.serve: message``: the priority for journald, no timestamp of our own."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += " " + " | ".join(self.formatException(record.exc_info).splitlines())
        return f"<{priority}>{text}"


class TerminalFormatter(logging.Formatter):
    """``2026-12-03T15:50:00.123+00:00 INFO vtl.serve: message``: the time as every other
    time we print (ISO 8601 with the offset, :func:`vtl.cli.formatting.iso_time`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from vtl.cli.formatting import iso_time

        return iso_time(record.created, "milliseconds") or ""


def configure(level: int, journal: bool | None = None) -> None:
    """Send log records to stderr, formatted for the journal or for a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal() if journal is None else journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(TerminalFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
