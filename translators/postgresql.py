"""The PostgreSQL translator: physical base backups plus archived WAL, restorable to any point
in time, and optionally a logical export that needs no PostgreSQL at all to read.

Source: a libpq conninfo plus ``ebm_wal_spool=DIR`` (see :mod:`translators.pg.source`).

Baseline: a base backup streamed through the replication protocol (read in this process
from PostgreSQL 15 on, :mod:`translators.pg.replication`; ``pg_basebackup -D - -Ft -X fetch``
for older servers) and converted member by member into ``data/...`` pax members
(:mod:`translators.pg.basebackup`): the data directory, ``backup_label``, ``backup_manifest``
and the WAL that makes it consistent.

Incremental: the WAL archived since the parent. The server's ``archive_command`` (set by the
EBM, :mod:`translators.pg.server`) copies each finished segment into the spool; a backup
switches to a new segment, waits for the switched one to be archived, checks the run of
segments since the parent has no gap and each segment's header belongs to this cluster,
and writes them as ``wal/<segment>``. Segments the parent put on tape are pruned from the
spool then (one backup late, once the catalog says the parent is durable).

WAL catalogue (the translator state, kept in the catalog and in each backup's trailer, so a
rebuilt catalog keeps it): the cluster's system identifier and timeline, the chain's base
(start/stop LSN, the server time it became consistent), and per segment its LSN range,
sha256 and first/last commit time, plus ``until``: the server time and LSN up to which the
backup's chain holds every commit. ``choose_point`` uses it to pick the backup whose chain
reaches a time or LSN.

Restore (physical, the default): the base backup's data directory, ``recovery.signal`` and
recovery settings (:mod:`translators.pg.recovery`) whose ``restore_command`` is the EBM's
``ebm wal-fetch`` (the restore's option ``wal_fetch``, :mod:`ebm.wal_fetch`), so PostgreSQL
started on it fetches each segment it replays from tape, reaches the target and promotes.
Without that option (``ebm restore --wal-local``, for a host that cannot reach the library)
every chain segment is written into ``pg_wal`` instead. ``--as csv`` writes the logical export
(:mod:`translators.pg.logical`) instead: schema SQL, one CSV per table, ``load.sql``.
Either appears in the target only once complete (:mod:`translators.pg.unpack`).

``ebm consolidate`` is refused (``supports_consolidation = False``, before any drive is
claimed): a new baseline is a new base backup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter

from .base import (
    BackupResult,
    Progress,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
    delete_stale_members,
    file_row,
)
from .pg import logical, recovery
from .pg.basebackup import DATA_PREFIX, run_basebackup
from .pg.replication import MIN_SERVER
from .pg.server import (
    close_quietly,
    connect,
    ensure_archiving,
    facts,
    now,
    switch_wal,
    wait_archived,
)
from .pg.source import PgSource
from .pg.tools import find_tool
from .pg.unpack import StagedDir
from .pg.wal import (
    Segment,
    Spool,
    check_segment,
    commit_times,
    describe,
    format_lsn,
    parse_lsn,
    segment_name,
    split_name,
)

STATE_FORMAT = "ebm-postgresql-state/1"
WAL_PREFIX = "wal/"
FORMS = ("physical", "csv")


def _when(t: float) -> str:
    """A point in time in a message, as both CLIs print times (ISO 8601 with the offset)."""
    from vtl.cli.formatting import iso_time

    return iso_time(t) or str(t)


def _check_chain(history: list[TranslatorState], pick: int) -> None:
    """Refuse a chain whose WAL has a hole: each backup after the base must continue at the
    segment after the previous one's last (backups refuse gaps, so this only catches a chain
    the catalog lost a backup of), since recovery would stop short at the hole."""
    chosen = history[pick]
    start = max((i for i in range(pick + 1) if history[i].get("kind") == "base"
                 and history[i]["base"] == chosen["base"]), default=None)
    if start is None:
        raise TranslatorError("the chain of that point has no base backup on record")
    size = chosen["segment_size"]
    tli, expected = split_name(history[start]["wal_end"], size)
    for state in history[start + 1:pick + 1]:
        for seg in state["segments"]:
            segno = split_name(seg["name"], size)[1]
            if segno != expected + 1:
                missing = segment_name(tli, expected + 1, size)
                raise TranslatorError(f"WAL gap in the chain: segment {missing} is on no backup")
            expected = segno


class PostgresqlTranslator(Translator):
    name = "postgresql"
    version = "1.0"
    supports_incremental = True
    # A base backup image rebuilt from base + WAL needs a server replaying the WAL (the issue
    # does not ask for one): refused by ``ebm consolidate`` before any drive is claimed.
    supports_consolidation = False
    consolidation_refusal = ("PostgreSQL chains are not consolidated: take a new base backup "
                             "with `ebm backup DATASET --full`, then let retention expire the "
                             "old chain")
    restore_forms = FORMS

    # -- source --------------------------------------------------------------------------
    def canonical_source(self, source: str) -> str:
        """The source as the catalog keeps it (a conninfo is not a path to resolve)."""
        return PgSource.parse(source).canonical()

    def validate_source(self, source: str) -> None:
        src = PgSource.parse(source)
        conn = connect(src)
        try:
            info = facts(conn)
        finally:
            close_quietly(conn)
        if info.archive_mode not in ("on", "always"):
            raise TranslatorError(
                "WAL archiving is not configured: archive_mode is off (run ALTER SYSTEM SET "
                "archive_mode = on and restart the server; see ebm/README.md)")

    # -- backup --------------------------------------------------------------------------
    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        src = PgSource.parse(source)
        conn = connect(src)
        try:
            info = facts(conn)
            ensure_archiving(conn, src, info)
            if parent_state is None or parent_state.get("format") != STATE_FORMAT:
                return self._baseline(conn, src, info, writer, progress)
            return self._incremental(conn, src, info, parent_state, writer, progress)
        finally:
            close_quietly(conn)

    def _baseline(self, conn: Any, src: PgSource, info: Any, writer: PaxWriter,
                  progress: ProgressCallback | None) -> BackupResult:
        def step(done: int, path: str) -> None:
            if progress is not None:
                progress(Progress("backup", 0, None, done, None, path))

        tool = None if info.version >= MIN_SERVER else find_tool("pg_basebackup", src.bindir)
        bb = run_basebackup(src, writer, info.segment_size, step, tool=tool)
        consistent = now(conn)
        last = max(bb.segments, key=lambda s: split_name(s.name, info.segment_size)[1])
        # The backup's end switched segments, so its last one goes to the archiver now: seeing
        # it in the spool proves archiving works before anyone relies on it.
        wait_archived(conn, src.spool, last.name)
        rows = list(bb.rows)
        members = self._logical(src, writer, rows, None, step)
        state = self._state(info, {"start_lsn": format_lsn(bb.start_lsn),
                                   "stop_lsn": format_lsn(bb.stop_lsn),
                                   "consistent_time": consistent, "timeline": bb.timeline},
                            consistent, bb.stop_lsn, last.name, bb.segments, members, src,
                            segments_only=False)
        return BackupResult(state=state, entries=rows, level_hint="baseline")

    def _incremental(self, conn: Any, src: PgSource, info: Any, parent: TranslatorState,
                     writer: PaxWriter, progress: ProgressCallback | None) -> BackupResult:
        if parent["system_identifier"] != info.system_identifier:
            raise TranslatorError(
                f"the server is another cluster (system identifier {info.system_identifier}, "
                f"the chain's is {parent['system_identifier']}): take a baseline with --full")
        size = info.segment_size
        tli, after = split_name(parent["wal_end"], size)
        if tli != info.timeline:
            raise TranslatorError(f"the server moved to timeline {info.timeline} (the chain is "
                                  f"on {tli}): take a baseline with --full")
        spool = Spool(src.spool, size)
        spool.prune(tli, after)  # the parent holds them, durably
        until_time, until_lsn, last = switch_wal(conn, info)
        upto = max(after, last)
        if upto > after:  # else no WAL since the parent's, which is on tape
            wait_archived(conn, src.spool, segment_name(tli, upto, size))
        names = spool.collect(tli, after, upto)
        segments = [describe(n, size) for n in names]
        for seg in segments:
            check_segment(src.spool / seg.name, info.system_identifier, size)
        times_complete = commit_times(src.spool, segments, size)  # a few records a segment
        rows: list[IndexEntry] = []
        for i, seg in enumerate(segments):
            rows.append(self._add_file(writer, src.spool / seg.name, WAL_PREFIX + seg.name))
            seg.sha256 = rows[-1].sha256 or ""
            if progress is not None:
                progress(Progress("backup", i + 1, len(segments), (i + 1) * size,
                                  len(segments) * size, seg.name))
        for name in spool.histories():
            rows.append(self._add_file(writer, src.spool / name, WAL_PREFIX + name))
        members = self._logical(src, writer, rows, parent, None)
        state = self._state(info, parent["base"], until_time, until_lsn,
                            segments[-1].name if segments else parent["wal_end"], segments,
                            members, src, segments_only=True)
        state["commit_times_complete"] = times_complete
        return BackupResult(state=state, entries=rows, level_hint="incremental")

    @staticmethod
    def _add_file(writer: PaxWriter, path: Path, member: str) -> IndexEntry:
        st = path.stat()
        entry = ArchiveEntry(path=member, kind="file", size=st.st_size, mode=0o600,
                             uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns)
        with open(path, "rb", buffering=0) as f:
            loc = writer.add(entry, f)
        if loc.short:
            raise TranslatorError(f"{path} shrank while it was being archived")
        return file_row(entry, loc)

    @staticmethod
    def _logical(src: PgSource, writer: PaxWriter, rows: list[IndexEntry],
                 parent: TranslatorState | None, step: Callable[[int, str], None] | None
                 ) -> list[str]:
        """The logical export (when the source asks for it); the parent's logical members
        this one no longer has are recorded as deleted, so a chain restore never mixes them."""
        if src.logical:
            rows += logical.export(find_tool("pg_dump", src.bindir), src, writer, step)
        members = [r.path for r in rows if r.path.startswith(logical.PREFIX)]
        rows += delete_stale_members(parent, members, writer)
        return members

    @staticmethod
    def _state(info: Any, base: dict, until_time: float, until_lsn: int, wal_end: str,
               segments: list[Segment], members: list[str], src: PgSource, *,
               segments_only: bool) -> TranslatorState:
        return {"format": STATE_FORMAT, "kind": "wal" if segments_only else "base",
                "system_identifier": info.system_identifier,
                "server_version": info.version, "segment_size": info.segment_size,
                "timeline": info.timeline, "base": base,
                "until": {"time": until_time, "lsn": format_lsn(until_lsn)},
                "wal_end": wal_end, "segments": [s.to_json() for s in segments],
                "logical": src.logical, "members": members}

    # -- choosing a point ----------------------------------------------------------------
    def choose_point(self, history: list[TranslatorState], when: float | None,
                     lsn: str | None, form: str) -> tuple[int, dict[str, Any]]:
        """Which of the dataset's backups (states oldest first) to restore for a point, and
        the restore options: the first backup whose chain holds every commit up to ``when``
        (or WAL up to ``lsn``) and whose base was consistent by then. None of both: the
        latest backup, recovered to the end of its WAL."""
        if form not in FORMS:
            raise TranslatorError(f"unknown restore form {form!r} (known: {', '.join(FORMS)})")
        if not history:
            raise TranslatorError("the dataset has no good backup")
        if form == "csv":
            if when is not None or lsn is not None:
                pick = self._pick(history, when, lsn)
                if not history[pick].get("logical"):
                    raise TranslatorError("that backup has no logical export (back up with "
                                          "ebm_logical=on)")
                return pick, {"form": "csv"}
            pick = max((i for i, s in enumerate(history) if s.get("logical")), default=None)
            if pick is None:
                raise TranslatorError("no backup of the dataset has a logical export (back up "
                                      "with ebm_logical=on)")
            return pick, {"form": "csv"}
        if when is None and lsn is None:
            _check_chain(history, len(history) - 1)
            return len(history) - 1, {"form": "physical"}
        pick = self._pick(history, when, lsn)
        _check_chain(history, pick)
        options: dict[str, Any] = {"form": "physical"}
        if when is not None:
            # Earlier backups of the chain end before ``when``; if this one's WAL has no commit
            # after it either, recovery would never reach the target (PostgreSQL refuses
            # that), and replaying all of it gives exactly the commits up to ``when``.
            chosen = history[pick]
            last_commit = max((s.get("last_commit") or 0 for s in chosen["segments"]),
                              default=0)
            if last_commit > when or not chosen.get("commit_times_complete", True):
                options["target_time"] = when
        else:
            options["target_lsn"] = lsn
        return pick, options

    @staticmethod
    def _pick(history: list[TranslatorState], when: float | None, lsn: str | None) -> int:
        key = (lambda s: s["until"]["time"]) if when is not None else (
            lambda s: parse_lsn(s["until"]["lsn"]))
        base_key = (lambda s: s["base"]["consistent_time"]) if when is not None else (
            lambda s: parse_lsn(s["base"]["stop_lsn"]))
        point: float = when if when is not None else parse_lsn(lsn or "")
        shown = _when(point) if when is not None else lsn
        for i, s in enumerate(history):
            if key(s) >= point and base_key(s) <= point:
                return i
        earliest = min(history, key=base_key)
        if point < base_key(earliest):
            first = _when(base_key(earliest)) if when is not None else earliest["base"]["stop_lsn"]
            raise TranslatorError(f"{shown} is before the earliest consistent point on tape "
                                  f"({first})")
        latest = max(history, key=key)
        if point > key(latest):
            last = _when(key(latest)) if when is not None else latest["until"]["lsn"]
            raise TranslatorError(f"{shown} is after the last WAL on tape ({last}): run "
                                  "`ebm backup` first")
        raise TranslatorError(f"no backup chain covers {shown} (it falls inside a base backup)")

    def restore_paths(self, options: dict[str, Any]) -> list[str]:
        """The members a restore in this form reads (the rest stays on tape)."""
        if options.get("form", "physical") not in FORMS:
            raise TranslatorError(f"unknown restore form {options.get('form')!r} "
                                  f"(known: {', '.join(FORMS)})")
        if options.get("form") == "csv":
            return ["logical"]
        return ["data"] if options.get("wal_fetch") else ["data", "wal"]

    # -- restore -------------------------------------------------------------------------
    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None,
                options: dict[str, Any] | None = None) -> RestoreStats:
        options = options or {"form": "physical"}
        csv = options.get("form") == "csv"
        staged = StagedDir(Path(target))
        stats = RestoreStats()
        try:
            for entry, data in entries:
                if entry.deleted:
                    continue
                rel = self._place(entry.path, csv)
                if rel is None or (select is not None and not select(entry.path)):
                    stats.skipped += 1
                    continue
                staged.write(rel, entry, data)
                stats.entries += 1
                if progress is not None:
                    progress(Progress("restore", stats.entries, None, staged.bytes, None,
                                      entry.path))
            if csv:
                if not (staged.path / "load.sql").exists():
                    raise TranslatorError("the backup holds no logical export")
            else:
                if not (staged.path / "backup_label").exists():
                    raise TranslatorError("the backup holds no base backup (backup_label)")
                recovery.prepare(staged.path, options.get("target_time"),
                                 options.get("target_lsn"), options.get("wal_fetch"),
                                 options.get("wal_chain"))
            staged.commit()
        except BaseException:
            staged.discard()
            raise
        stats.files, stats.bytes = staged.files, staged.bytes
        return stats

    @staticmethod
    def _place(member: str, csv: bool) -> str | None:
        """Where a member goes in the restored directory (None: not part of this form)."""
        if csv:
            return member[len(logical.PREFIX):] if member.startswith(logical.PREFIX) else None
        if member.startswith(DATA_PREFIX):
            return member[len(DATA_PREFIX):] or "."
        if member.startswith(WAL_PREFIX):
            return "pg_wal/" + member[len(WAL_PREFIX):]
        return None
