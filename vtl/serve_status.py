"""The running ``vtl serve``'s status file, ``<root>/serve-status.json``: how the CLI (``vtl
target sessions``) sees live sessions without talking to the server.

The server writes it when it starts, then every :data:`INTERVAL` seconds while a connection
is open if it changed (nothing else changes it), and on SIGHUP's reload (atomically: temp
file, rename; mode 0600 like every library file); it removes it when it stops. A
reader trusts it only while ``serve.lock`` is held (a server killed with SIGKILL leaves the
file behind, not the lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_NAME = "serve-status.json"
LOCK_NAME = "serve.lock"
INTERVAL = 1.0


class NotServing(Exception):
    """No ``vtl serve`` runs for this library."""


def write(root: Path, data: dict[str, Any]) -> None:
    path = Path(root) / STATUS_NAME
    tmp = path.with_name(f".{STATUS_NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({**data, "updated": time.time()}, f, indent=1, default=str)
    os.replace(tmp, path)


def remove(root: Path) -> None:
    try:
        os.unlink(Path(root) / STATUS_NAME)
    except FileNotFoundError:
        pass


def server_pid(root: Path) -> int | None:
    """The pid of the ``vtl serve`` holding ``root``'s lock, None when none does."""
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a server runs
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read(root: Path) -> dict[str, Any]:
    """The running server's last status; NotServing when no server holds the lock."""
    if server_pid(root) is None:
        raise NotServing(f"no 'vtl serve' is running for {root}")
    try:
        return json.loads((Path(root) / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotServing(f"'vtl serve' for {root} has not published its status yet") from None
