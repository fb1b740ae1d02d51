"""The UIO side of a TCMU device: finding ours in sysfs, mapping its ring, waiting and kicking.

target_core_user registers one UIO device per enabled user backstore, named
``tcm-user/<hba>/<backstore name>/<dev_config>``; by the tcmu-runner convention the
``dev_config`` is ``<subtype>/<cfgstring>``. Ours is subtype ``vtl`` with the cfgstring
``<role>@<library root>`` (role ``changer`` or ``drive<N>``), which :mod:`vtl.lio.export`
writes and :func:`find_devices` reads back, so a handler serves exactly the backstores made
for its own library.

The ring is ``/sys/class/uio/uioN/maps/map0/size`` bytes mmapped from ``/dev/uioN`` at offset
0. A ``read`` of 4 bytes waits for the kernel's next interrupt (a new command); a 4-byte
``write`` makes the kernel look at the tail (completions) and retry commands it queued while
the ring or data area was full.
"""

from __future__ import annotations

import mmap
import os
import select
from dataclasses import dataclass
from pathlib import Path

SUBTYPE = "vtl"
UIO_CLASS = Path("/sys/class/uio")
DEV = Path("/dev")
KICK = b"\0\0\0\0"


@dataclass(frozen=True)
class UioDevice:
    """One of our TCMU devices as sysfs names it."""

    uio: str  # "uio0"
    hba: int
    backstore: str  # the user backstore's name in configfs
    role: str  # "changer" or "drive<N>"
    root: str  # the library directory it belongs to
    map_size: int


def config_string(role: str, root: Path | str) -> str:
    """The backstore's ``dev_config`` for a role of the library at ``root``."""
    return f"{SUBTYPE}/{role}@{os.path.abspath(root)}"


def parse_name(uio: str, name: str, map_size: int) -> UioDevice | None:
    """A UioDevice if ``name`` is one of ours, else None (another handler's device)."""
    parts = name.strip().split("/", 4)
    if len(parts) != 5 or parts[0] != "tcm-user" or parts[3] != SUBTYPE:
        return None
    role, at, root = parts[4].partition("@")
    if not at or not parts[1].isdigit():
        return None
    return UioDevice(uio, int(parts[1]), parts[2], role, root, map_size)


def find_devices(root: Path | str | None = None, uio_class: Path = UIO_CLASS) -> list[UioDevice]:
    """Our devices present now (those of the library at ``root`` when given)."""
    found = []
    want = os.path.abspath(root) if root is not None else None
    for entry in sorted(uio_class.glob("uio*")):
        try:
            name = (entry / "name").read_text()
            size = int((entry / "maps" / "map0" / "size").read_text().strip(), 0)
        except (OSError, ValueError):
            continue  # going away, or not a TCMU device
        dev = parse_name(entry.name, name, size)
        if dev is not None and (want is None or dev.root == want):
            found.append(dev)
    return found


class UioRing:
    """An open ``/dev/uioN``: its mapped shared area, a wait for the next interrupt and the
    kick. Closing unmaps and closes; the kernel keeps the device (and any commands in the
    ring) for the next handler to open."""

    def __init__(self, device: UioDevice, dev_dir: Path = DEV) -> None:
        self.device = device
        self.fd = os.open(dev_dir / device.uio, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.area = mmap.mmap(self.fd, device.map_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise

    def wait(self, stop_fd: int, timeout: float | None = None) -> bool:
        """Wait for the kernel's interrupt (True) or ``stop_fd`` readable / timeout (False)."""
        ready, _, _ = select.select([self.fd, stop_fd], [], [], timeout)
        if self.fd in ready:
            os.read(self.fd, 4)  # consume the event count, re-arming the wait
            return True
        return False

    def kick(self) -> None:
        os.write(self.fd, KICK)

    def close(self) -> None:
        try:
            self.area.close()
        except BufferError:  # a view still alive (a crash path): the fd close is what matters
            pass
        os.close(self.fd)
