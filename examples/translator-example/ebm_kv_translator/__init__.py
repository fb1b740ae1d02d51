"""An example EBM translator in its own package: a JSON key-value file, one member per key.

Backup reads the file (one JSON object), writes each key's value as the member
``<name>.d/<quoted key>`` and keeps ``{key: sha256 of its value}`` as the state; an
incremental writes only the keys whose value changed and a deletion marker for each key that
is gone. Restore writes the per-key tree under the target and then rebuilds ``<name>`` (the
JSON file) from it, through a temporary name; it accepts one call per backup of a chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter
from translators.base import (
    BackupResult,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
    file_row,
    stat_source,
)

STATE_FORMAT = "ebm-kv-example/1"


def _load(source: str) -> dict:
    try:
        with open(source, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise TranslatorError(f"cannot read {source} as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TranslatorError(f"{source} is not a JSON object of keys")
    return data


class KeyValueTranslator(Translator):
    name = "kvjson"
    version = "0.1"
    supports_incremental = True

    def validate_source(self, source: str) -> None:
        stat_source(source, "key-value file")
        _load(source)

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        data = _load(source)
        name = os.path.basename(source)
        prev = parent_state.get("keys") if isinstance(parent_state, dict) and \
            parent_state.get("format") == STATE_FORMAT and parent_state.get("name") == name else None
        rows = []
        gone = sorted(set(prev or ()) - set(data))
        if gone:
            paths = [self._member(name, k) for k in gone]
            off = writer.add_deletions(paths)
            rows += [IndexEntry(path=p, kind="file", deleted=True, header_offset=off,
                                data_offset=off) for p in paths]
        keys = {}
        now = time.time_ns()
        for key in sorted(data):
            body = json.dumps(data[key], sort_keys=True).encode() + b"\n"
            keys[key] = hashlib.sha256(body).hexdigest()
            if prev is not None and prev.get(key) == keys[key]:
                continue
            entry = ArchiveEntry(path=self._member(name, key), kind="file", size=len(body),
                                 mode=0o644, mtime_ns=now)
            rows.append(file_row(entry, writer.add(entry, body)))
        state = {"format": STATE_FORMAT, "name": name, "keys": keys}
        return BackupResult(state=state, entries=rows,
                            level_hint="baseline" if prev is None else "incremental")

    @staticmethod
    def _member(name: str, key: str) -> str:
        return f"{name}.d/{urllib.parse.quote(key, safe='')}"

    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        target = Path(target)
        stats = RestoreStats()
        names = set()
        for entry, data in entries:
            dirname, _, quoted = entry.path.partition("/")
            if not dirname.endswith(".d") or not quoted or "/" in quoted or quoted in (".", ".."):
                raise TranslatorError(f"unexpected member {entry.path!r} in a kvjson backup")
            names.add(dirname[:-2])
            path = target / dirname / quoted
            if entry.deleted:
                path.unlink(missing_ok=True)
                stats.deleted += 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            body = data.read()
            json.loads(body)  # a damaged value is refused here, not in the rebuilt file
            path.write_bytes(body)
            stats.entries += 1
            stats.files += 1
            stats.bytes += len(body)
        for name in names:
            self._rebuild(target, name)
        return stats

    @staticmethod
    def _rebuild(target: Path, name: str) -> None:
        """The JSON file again, from the per-key tree; written aside, then renamed."""
        tree = target / f"{name}.d"
        doc = {urllib.parse.unquote(p.name): json.loads(p.read_bytes())
               for p in sorted(tree.iterdir())}
        tmp = target / f".{name}.ebm-partial"
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, target / name)

