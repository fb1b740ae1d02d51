"""``ebm diff A B`` and ``ebm find PATTERN``: questions answered from the catalog's file index
alone, without reading a tape.

``diff`` compares two backups' trees as they stand at their points of their chains (what a
restore of each would produce): a path is *added*, *removed*, or *modified* when its kind,
size, mode, owner, mtime, content hash or link target differ. ``find`` lists every version of
the paths matching a glob across the good backups, newest first: a pattern without ``/``
matches a name in any directory, one with ``/`` the whole path (as ``ebm ls`` does).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from ebm.catalog import Backup, Catalog, FileRow

_COMPARED = ("kind", "size", "mode", "uid", "gid", "mtime_ns", "sha256", "linkname")


@dataclass(frozen=True)
class Change:
    change: str  # "added", "removed" or "modified"
    path: str
    what: tuple[str, ...] = ()  # for "modified": the attributes that differ
    old: FileRow | None = field(default=None, compare=False)  # the row in A (None: added)
    new: FileRow | None = field(default=None, compare=False)  # the row in B (None: removed)


def diff_views(old: dict[str, FileRow], new: dict[str, FileRow]) -> list[Change]:
    """The changes from tree ``old`` to tree ``new``, by path."""
    out = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a is None:
            out.append(Change("added", path, new=b))
        elif b is None:
            out.append(Change("removed", path, old=a))
        else:
            what = tuple(k for k in _COMPARED if getattr(a, k) != getattr(b, k))
            if what:
                out.append(Change("modified", path, what, old=a, new=b))
    return out


def diff_backups(catalog: Catalog, a: Backup, b: Backup) -> list[Change]:
    from ebm.restore import final_view

    return diff_views(final_view(catalog, catalog.chain(a)), final_view(catalog, catalog.chain(b)))


def name_matches(path: str, pattern: str) -> bool:
    """``*.txt`` matches the last name anywhere; ``docs/*.txt`` the whole path."""
    pattern = pattern.strip("/")
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def find(catalog: Catalog, pattern: str, backups: Iterable[Backup]
         ) -> list[tuple[Backup, FileRow]]:
    """Every stored version of a matching path (the rows each backup wrote), newest first."""
    hits = []
    for b in sorted(backups, key=lambda b: (b.started, b.id), reverse=True):
        hits += [(b, row) for row in catalog.files(b.id)
                 if not row.deleted and name_matches(row.path, pattern)]
    return hits
