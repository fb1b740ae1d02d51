"""Loading the optional C extensions (setup.py builds them; each may be missing).

An extension only ever speeds up a path that also exists in pure Python, so a missing one (no
compiler at install time) is no error, and ``VTL_NO_FASTPATH=1`` turns them all off to run
the reference path (tests, A/B benchmarks).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

DISABLE_ENV = "VTL_NO_FASTPATH"


def optional_extension(name: str, *needs: str) -> ModuleType | None:
    """The extension module ``name``, or None when it is not built, is turned off, or lacks
    one of the functions ``needs`` (built from older source: an editable install whose
    extension was not rebuilt must fall back, not fail at import)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if all(hasattr(module, n) for n in needs) else None
