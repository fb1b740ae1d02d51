"""The source string of a PostgreSQL dataset: a libpq conninfo plus the EBM's own keys.

Example: ``host=/run/postgresql port=5432 user=ebm dbname=postgres
ebm_wal_spool=/var/lib/ebm/wal/main ebm_logical=on``.

* ``ebm_wal_spool`` (required) - the directory the server's ``archive_command`` copies each
  finished WAL segment into and the EBM's next backup collects from (same host as the server);
* ``ebm_logical`` (``on``/``off``, default ``off``) - also carry a logical export (schema SQL and
  CSV per table) in every backup, for ``ebm restore --as csv``;
* ``ebm_bindir`` - where pg_basebackup and pg_dump live (default: the newest
  ``/usr/lib/postgresql/*/bin``, then ``PATH``).

Every other ``key=value`` goes to libpq unchanged. A ``password`` is refused: the source is
written into every backup header on tape, so passwords belong in ``~/.pgpass`` or
``PGPASSFILE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from translators.base import TranslatorError

EBM_KEYS = ("ebm_wal_spool", "ebm_logical", "ebm_bindir")
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^\s'\\]|\\.)*))")
_UNESCAPE = re.compile(r"\\(.)")


def _quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_pairs(text: str) -> dict[str, str]:
    """libpq's ``key=value`` syntax (single quotes, backslash escapes), keys in order."""
    pairs: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _PAIR.match(text, pos)
        if m is None or m.end() == pos:
            raise TranslatorError(f"bad PostgreSQL source near {text[pos:pos + 30]!r}: "
                                  "use libpq key=value pairs plus ebm_wal_spool=DIR")
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        pairs[m.group(1)] = _UNESCAPE.sub(r"\1", raw)
        pos = m.end()
    return pairs


@dataclass(frozen=True, slots=True)
class PgSource:
    libpq: dict[str, str]
    spool: Path
    logical: bool = False
    bindir: Path | None = None

    @classmethod
    def parse(cls, text: str) -> PgSource:
        pairs = parse_pairs(text)
        if "password" in pairs:
            raise TranslatorError("do not put a password in the source (it is written to tape): "
                                  "use ~/.pgpass or PGPASSFILE")
        spool = pairs.pop("ebm_wal_spool", "")
        if not spool:
            raise TranslatorError("the PostgreSQL source needs ebm_wal_spool=DIR (where "
                                  "archive_command puts WAL segments for the EBM)")
        if not Path(spool).is_absolute() or re.search(r"['%\s]", spool):
            raise TranslatorError(f"ebm_wal_spool {spool!r} must be an absolute path without "
                                  "quotes, % or blanks (it goes into archive_command)")
        logical = pairs.pop("ebm_logical", "off").lower()
        if logical not in ("on", "off", "yes", "no", "true", "false", "1", "0"):
            raise TranslatorError(f"ebm_logical must be on or off, not {logical!r}")
        bindir = pairs.pop("ebm_bindir", "")
        unknown = [k for k in pairs if k.startswith("ebm_")]
        if unknown:
            raise TranslatorError(f"unknown source key {unknown[0]} (known: {', '.join(EBM_KEYS)})")
        return cls(libpq=pairs, spool=Path(spool), logical=logical in ("on", "yes", "true", "1"),
                   bindir=Path(bindir) if bindir else None)

    @property
    def conninfo(self) -> str:
        """What libpq (psycopg, pg_basebackup -d, pg_dump -d) gets."""
        return " ".join(f"{k}={_quote(v)}" for k, v in self.libpq.items())

    def canonical(self) -> str:
        """The source as the catalog stores it: the same keys, one spelling."""
        extra = {"ebm_wal_spool": str(self.spool), "ebm_logical": "on" if self.logical else "off"}
        if self.bindir is not None:
            extra["ebm_bindir"] = str(self.bindir)
        return " ".join(f"{k}={_quote(v)}" for k, v in {**self.libpq, **extra}.items())

    def where(self) -> str:
        """host:port for messages."""
        return f"{self.libpq.get('host', 'localhost')}:{self.libpq.get('port', '5432')}"
