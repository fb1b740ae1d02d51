"""Which PostgreSQL client program to run: the source's ``ebm_bindir``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian keeps each major version there, off ``PATH``), else
``PATH``. Newest, because pg_basebackup and pg_dump read older servers but not newer ones."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from translators.base import TranslatorError


def find_tool(name: str, bindir: Path | None = None) -> str:
    if bindir is not None:
        path = bindir / name
        if path.exists():
            return str(path)
        raise TranslatorError(f"{name} not found in ebm_bindir {bindir}")
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: float(Path(p).parent.parent.name))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise TranslatorError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
