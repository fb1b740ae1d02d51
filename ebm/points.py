"""Restoring to a point in time or an LSN, for translators that catalogue their WAL.

A translator such as ``postgresql`` writes a baseline and then the server's write-ahead log,
and records in each backup's state what the chain up to it holds (the base's consistent
point, the last commit time and LSN reached). Which backup a point needs is then not "the
latest one started before it" (``ebm.restore.resolve``) but the first one whose chain reaches
that point; and the restore needs to be told the point. Such a translator has
``choose_point(states, when, lsn, form) -> (index, options)`` and
``restore_paths(options)``; this module hands it the dataset's good backups' states, oldest
first, and returns the backup and the options for :func:`ebm.restore.restore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ebm.catalog import Backup, Catalog
from ebm.manager import decode_state
from ebm.restore import RestoreError

if TYPE_CHECKING:
    from translators.base import Translator


def restores_to_points(translator: Translator) -> bool:
    return callable(getattr(translator, "choose_point", None))


def resolve_point(catalog: Catalog, dataset: str, translator: Translator, *,
                  when: float | None = None, lsn: str | None = None,
                  form: str = "physical") -> tuple[Backup, dict[str, Any]]:
    """The backup whose chain reaches ``when``/``lsn`` (or the latest), and restore options."""
    from translators.base import TranslatorError

    backups: list[Backup] = []
    states: list[dict[str, Any]] = []
    for b in catalog.backups(dataset, states=["done"]):
        raw = catalog.translator_state(b.id)
        state = decode_state(raw) if raw is not None else None
        if isinstance(state, dict):
            backups.append(b)
            states.append(state)
    try:
        index, options = translator.choose_point(  # type: ignore[attr-defined]
            states, when, lsn, form)
    except TranslatorError as e:
        raise RestoreError(f"dataset {dataset}: {e}") from None
    return backups[index], options
