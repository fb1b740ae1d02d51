"""Translators: one module per application, loaded through the ebm.translators entry points.

``load_translator(name)`` imports only the module that ``name`` needs (see translators.base for
the plugin interface and the chain/restore semantics).
"""

from .base import (
    BackupResult,
    Progress,
    RestoreStats,
    Translator,
    TranslatorError,
    apply_chain,
    available_translators,
    load_translator,
)

__all__ = [
    "BackupResult",
    "Progress",
    "RestoreStats",
    "Translator",
    "TranslatorError",
    "apply_chain",
    "available_translators",
    "load_translator",
]
