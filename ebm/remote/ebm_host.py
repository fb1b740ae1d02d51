"""What the EBM needs on its own host to back up to a remote library: where the library
is, how to log in, and a catalog directory of its own.

Why its own module: with a remote library the catalog cannot live in the library's root (that
is on another machine), so the EBM keeps a catalog-only directory here (``--catalog DIR``):
the same ``catalog.sqlite`` layout (pools, cartridges, the ``ebm_`` tables), made on first
use, 0700/0600. The cartridges it knows are the barcodes the changer reports (READ ELEMENT
STATUS with volume tags); ``ebm pool add`` takes them by those barcodes, as it does locally.

The first command given ``--library`` writes ``ebm-remote.toml`` (``REMOTE_CONFIG``) into the
catalog directory: the URL, the CHAP file's path, the initiator name, digests. Later
commands, and ``ebm scheduler``'s jobs (``ebm --root DIR ...``), then need only the
directory: a catalog directory with that file always means its remote library.

Credentials come from a file that only its owner may read (``--chap-file F``, mode 0600):
``user:secret`` on the first line, and optionally ``mutual_user:mutual_secret`` on the second.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ebm.remote.initiator import Chap, initiator_name_for_host
from ebm.remote.iscsi_url import IscsiUrl, parse_url
from vtl import CATALOG_NAME

if TYPE_CHECKING:
    from ebm.catalog import Catalog
    from ebm.remote.remote_library import RemoteLibrary


REMOTE_CONFIG = "ebm-remote.toml"


class RemoteSetupError(ValueError):
    """Bad remote-library settings (URL, credentials file, catalog directory); one line."""


@dataclass(frozen=True)
class RemoteSpec:
    """A library the EBM drives as SCSI devices: an iSCSI target (``url``), or this host's
    kernel devices (``devices``: the changer's node, then the drives' ``/dev/nstN`` in
    element-address order, given as ``--library /dev/sch0,/dev/nst0,/dev/nst1``)."""

    url: IscsiUrl | None
    chap: Chap | None = None
    initiator_name: str = ""
    header_digest: bool = False
    data_digest: bool = False
    devices: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, url: str, *, chap_file: Path | None = None,
                     initiator_name: str | None = None, digests: bool = False) -> RemoteSpec:
        name = initiator_name or initiator_name_for_host()
        if url.startswith("/dev/"):
            devices = tuple(part for part in url.split(",") if part)
            if len(devices) < 2 or not all(d.startswith("/dev/") for d in devices):
                raise RemoteSetupError(f"kernel devices: expected CHANGER,DRIVE[,DRIVE...] "
                                       f"under /dev, got {url!r}")
            return cls(None, initiator_name=name, devices=devices)
        try:
            parsed = parse_url(url)
        except ValueError as e:
            raise RemoteSetupError(str(e)) from None
        return cls(parsed, read_chap_file(chap_file) if chap_file else None, name, digests,
                   digests)

    def __str__(self) -> str:
        return ",".join(self.devices) if self.url is None else str(self.url)

    def open_library(self) -> RemoteLibrary:
        from ebm.remote.remote_library import RemoteLibrary

        if self.url is None:
            return RemoteLibrary.kernel(self.devices[0], list(self.devices[1:]),
                                        initiator_name=self.initiator_name)
        return RemoteLibrary.open(self.url, chap=self.chap, initiator_name=self.initiator_name,
                                  header_digest=self.header_digest, data_digest=self.data_digest)


def read_chap_file(path: Path) -> Chap:
    """``user:secret`` (and ``mutual_user:mutual_secret``) from a 0600 file."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as e:
        raise RemoteSetupError(f"cannot read CHAP file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RemoteSetupError(f"CHAP file {path} is readable by others: chmod 600 it")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pairs = [line.partition(":") for line in lines[:2]]
    if not pairs or any(not user or not sep or not secret for user, sep, secret in pairs):
        raise RemoteSetupError(f"CHAP file {path}: expected user:secret "
                               "(and mutual_user:mutual_secret on a second line)")
    user, _, secret = pairs[0]
    if len(pairs) == 2:
        return Chap(user, secret, pairs[1][0], pairs[1][2])
    return Chap(user, secret)


def prepare_catalog_dir(root: Path) -> None:
    """Make the EBM's catalog directory and an empty catalog in it, the first time."""
    from vtl.catalog import MediaCatalog

    root = Path(root)
    if (root / CATALOG_NAME).exists():
        return
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            MediaCatalog(root / CATALOG_NAME, create=True).close()
        finally:
            os.umask(old)
    except OSError as e:
        raise RemoteSetupError(f"cannot make the catalog in {root}: {e.strerror}") from None


def register_barcodes(catalog: Catalog, barcodes: list[str], where: str) -> None:
    """Cartridges the changer reports become known to the local catalog (once)."""
    from vtl.catalog import now_iso

    with catalog.tx():
        for barcode in barcodes:
            catalog.db.execute("INSERT OR IGNORE INTO cartridges(barcode, media, capacity, created, path)"
                       " VALUES (?, 'remote', 0, ?, ?)", (barcode, now_iso(), where))


def save_remote_config(root: Path, options: dict[str, object]) -> None:
    """Remember ``--library`` and its login options in the catalog directory (0600)."""
    import json

    lines = ["# written by `ebm --library ...`: this catalog directory's remote library",
             "[library]"]
    for key in ("url", "chap_file", "initiator_name", "digests"):
        value = options.get(key)
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif value is not None:
            lines.append(f"{key} = {json.dumps(str(value))}")
    text = "\n".join(lines) + "\n"
    path = Path(root) / REMOTE_CONFIG
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_remote_config(root: Path) -> dict[str, object] | None:
    """The options ``save_remote_config`` wrote, or None for a directory without them."""
    import tomllib

    path = Path(root) / REMOTE_CONFIG
    try:
        with path.open("rb") as f:
            table = tomllib.load(f).get("library", {})
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RemoteSetupError(f"cannot read {path}: {e}") from None
    if not isinstance(table, dict) or not isinstance(table.get("url"), str):
        raise RemoteSetupError(f"{path} names no library url")
    chap = table.get("chap_file")
    return {"url": table["url"], "chap_file": Path(chap) if isinstance(chap, str) else None,
            "initiator_name": table.get("initiator_name"),
            "digests": bool(table.get("digests", False))}
