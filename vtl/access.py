"""Who may read a library: its owner only, or also one group the admin named at creation.

A library holds secrets (the CHAP secret in ``library.toml``) and data (cartridges full of
unencrypted backups, the catalog that maps them), so nothing in it is world-readable. The
choice is made once, by ``vtl init``, and recorded in the library directory's own mode:

- private (default): the directory 0700, files 0600, umask 077;
- shared with a group (``vtl init --group NAME``): the directory 2750 with that group, files
  0640, umask 027; the setgid bit hands the group to every file and folder created later.

Every file under the root is created by code that honours the process umask (the catalog and
its backups by SQLite, cartridges, their index and MAM sidecars, lock files), so both CLIs set
the umask for the library they open (:func:`apply_umask`) before touching it, and
``library.toml`` is written with an explicit mode as well (:func:`file_mode`).
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
GROUP_UMASK = 0o027
PRIVATE_DIR_MODE = 0o700
GROUP_DIR_MODE = 0o2750  # setgid: what is created inside keeps the library's group


class UnknownGroup(ValueError):
    """``--group`` names no group on this machine."""


def shared_with_group(root: Path) -> bool:
    """True when ``vtl init --group`` made the directory: setgid, and open to its group. A
    library from before (a plain 0755 directory) counts as private: new files get 0600."""
    try:
        mode = os.stat(root).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID) and bool(mode & stat.S_IRWXG)


def umask_for(root: Path) -> int:
    return GROUP_UMASK if shared_with_group(root) else PRIVATE_UMASK


def apply_umask(root: Path) -> None:
    """Set the process umask for files created under ``root`` from now on."""
    os.umask(umask_for(root))


def file_mode(root: Path) -> int:
    """The mode for a new file in ``root``: 0600, or 0640 in a group-shared library."""
    return 0o640 if shared_with_group(root) else 0o600


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise UnknownGroup(f"unknown group {name!r}") from None


def make_root(root: Path, group: str | None = None) -> None:
    """Create (or take over) the library directory with the modes above, and set the umask."""
    gid = group_id(group) if group else None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if gid is not None:
        os.chown(root, -1, gid)
        os.chmod(root, GROUP_DIR_MODE)
    else:
        os.chmod(root, PRIVATE_DIR_MODE)
    apply_umask(root)
