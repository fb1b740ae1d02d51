"""Faults injected to test backup software, as mhVTL's users do with its ``vtlcmd``:
TapeAlert flags raised on a drive or on the changer, and media errors at chosen blocks of a
cartridge (``vtl drive tapealert``, ``vtl changer tapealert``, ``vtl cartridge
inject-error``).

They are kept in ``<root>/faults.json``, which the commands rewrite (under an flock,
replaced atomically) and the device models of a running ``vtl serve`` read: a drive checks
the file's mtime at each command off the data path, and the commands SIGHUP the server,
which reloads it at once, so even a stream of READs meets a new error at its next block.

- A media error stays until it is cleared, like a bad spot on a tape: every READ or VERIFY
  of that block answers MEDIUM ERROR 11/00 (and steps past it, as for a damaged record),
  every WRITE there MEDIUM ERROR 0C/00 with nothing written, with the TapeAlert flags a real
  failure raises (3 HARD ERROR, 4 MEDIA, 5 READ FAILURE or 6 WRITE FAILURE).
- A TapeAlert flag is an event: each running drive (or changer) raises it once, and the LOG
  SENSE that reports it clears it, as TapeAlert flags are. Raising it again (even the same
  flag) raises it again.

Flags go by number (1..64) or by the name of the TapeAlert specification (SSC-4 Annex A for
drives, SMC-3 for changers), lower case with dashes: ``clean-now``, ``library-door``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vtl.errors import LibraryError

FAULTS_NAME = "faults.json"
READ, WRITE = "read", "write"
CHANGER = "changer"

DRIVE_FLAGS = {n: i for i, n in enumerate((
    "read-warning", "write-warning", "hard-error", "media", "read-failure", "write-failure",
    "media-life", "not-data-grade", "write-protect", "no-removal", "cleaning-media",
    "unsupported-format", "recoverable-mechanical-cartridge-failure",
    "unrecoverable-mechanical-cartridge-failure", "memory-chip-in-cartridge-failure",
    "forced-eject", "read-only-format", "tape-directory-corrupted-on-load",
    "nearing-media-life", "clean-now", "clean-periodic", "expired-cleaning-media",
    "invalid-cleaning-tape", "retension-requested", "dual-port-interface-error",
    "cooling-fan-failure", "power-supply-failure", "power-consumption", "drive-maintenance",
    "hardware-a", "hardware-b", "interface", "eject-media", "microcode-update-fail",
    "drive-humidity", "drive-temperature", "drive-voltage", "predictive-failure",
    "diagnostics-required"), start=1)} | {n: i for i, n in enumerate((
    "lost-statistics", "tape-directory-invalid-at-unload", "tape-system-area-write-failure",
    "tape-system-area-read-failure", "no-start-of-data", "loading-failure",
    "unrecoverable-unload-failure", "automation-interface-failure", "firmware-failure",
    "worm-medium-integrity-check-failed", "worm-medium-overwrite-attempted"), start=50)}
CHANGER_FLAGS = {n: i for i, n in enumerate((
    "library-hardware-a", "library-hardware-b", "library-hardware-c", "library-hardware-d",
    "library-diagnostics-failure", "library-interface", "library-predictive-failure",
    "library-maintenance", "library-humidity-limits", "library-temperature-limits",
    "library-voltage-limits", "library-stray-media", "library-pick-retry",
    "library-place-retry", "library-load-retry", "library-door", "library-mailslot",
    "library-magazine", "library-security", "library-security-mode", "library-offline",
    "library-drive-offline", "library-scan-retry", "library-inventory",
    "library-illegal-operation", "dual-port-interface-error", "cooling-fan-failure",
    "power-supply", "power-consumption", "pass-through-mechanism-failure",
    "cartridge-in-pass-through-mechanism", "unreadable-bar-code-labels"), start=1)}

_NO_ERRORS: Mapping[tuple[int, int], frozenset[str]] = MappingProxyType({})


class BadFault(LibraryError):
    """A fault the command line names wrongly (an unknown flag, a bad block)."""


def parse_flag(text: str, names: Mapping[str, int]) -> int:
    """A TapeAlert flag from its number (1..64) or its name; BadFault otherwise."""
    text = text.strip().lower().replace("_", "-")
    if text.isdigit() and 1 <= int(text) <= 64:
        return int(text)
    if text in names:
        return names[text]
    raise BadFault(f"unknown TapeAlert flag {text!r} (a number 1..64 or a name such as "
                   f"{next(iter(names))})")


def device_key(drive: int | None) -> str:
    """The key of a drive (0-based) or, for None, of the changer."""
    return CHANGER if drive is None else f"drive{drive}"


class FaultTable:
    """The injected faults as one process sees them; ``refresh`` re-reads a changed file."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FAULTS_NAME
        self._stamp: tuple[int, int] | None = None
        self._media: dict[str, dict[tuple[int, int], frozenset[str]]] = {}
        self._alerts: dict[str, tuple[int, frozenset[int]]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (one stat otherwise)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self.reload()

    def reload(self) -> None:
        """Read the file now (SIGHUP); a missing or damaged one means no faults."""
        try:
            st = os.stat(self.path)
            doc = _parse(self.path.read_bytes())
            self._stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            doc, self._stamp = {}, None
        # whole new dicts, swapped in: a drive thread reading the old one is unaffected
        self._media = {bc: {(e["partition"], e["block"]): frozenset(e["ops"]) for e in errs}
                       for bc, errs in doc.get("media", {}).items()}
        self._alerts = {k: (v["serial"], frozenset(v["flags"]))
                        for k, v in doc.get("tapealert", {}).items()}

    def media_errors(self, barcode: str) -> Mapping[tuple[int, int], frozenset[str]]:
        """(partition, block) -> {"read", "write"} for a cartridge (empty: none)."""
        return self._media.get(barcode, _NO_ERRORS)

    def raised(self, device: str) -> tuple[int, frozenset[int]]:
        """(serial, flags) of the last TapeAlert injection on ``device`` (0: none yet)."""
        return self._alerts.get(device, (0, frozenset()))


def take_injected(faults: FaultTable, device: str, seen: int, into: set[int]) -> int:
    """Add to a device's TapeAlert flags ``into`` what was injected on it since injection
    ``seen`` (re-reading the file if it changed); the serial to remember as seen."""
    faults.refresh()
    serial, flags = faults.raised(device)
    if serial != seen:
        into.update(flags)
    return serial


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def _editing(root: Path) -> Iterator[dict[str, Any]]:
    """The faults document, written back (atomically, under an flock) after the block."""
    path = Path(root) / FAULTS_NAME
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            doc = _parse(path.read_bytes())
        except FileNotFoundError:
            doc = {}
        yield doc
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)
    finally:
        os.close(fd)


def raise_tapealert(root: Path, device: str, flags: set[int]) -> None:
    """Raise ``flags`` once on ``device`` (``device_key``) in every running model."""
    with _editing(root) as doc:
        alerts = doc.setdefault("tapealert", {})
        serial = alerts.get(device, {}).get("serial", 0) + 1
        alerts[device] = {"serial": serial, "flags": sorted(flags)}


def clear_tapealert(root: Path, device: str) -> None:
    """Forget a pending injection (a model that raised it keeps the flags until read)."""
    with _editing(root) as doc:
        alerts = doc.setdefault("tapealert", {})
        if device in alerts:
            alerts[device]["flags"] = []
            alerts[device]["serial"] += 1


def inject_media_error(root: Path, barcode: str, block: int, partition: int,
                       ops: set[str]) -> None:
    """Make ``ops`` ({"read", "write"}) at ``block`` of ``partition`` fail from now on."""
    if block < 0 or not 0 <= partition <= 3 or not ops <= {READ, WRITE} or not ops:
        raise BadFault(f"bad media error: block {block}, partition {partition}, {ops}")

    def change(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [e for e in errors if (e["partition"], e["block"]) != (partition, block)]
        return [*kept, {"partition": partition, "block": block, "ops": sorted(ops)}]

    _edit_media(root, barcode, change)


def clear_media_errors(root: Path, barcode: str, block: int | None = None,
                       partition: int = 0) -> int:
    """Clear a cartridge's injected errors (all, or the one at ``block``); how many."""
    cleared = []

    def change(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = [e for e in errors if block is not None
                and (e["partition"], e["block"]) != (partition, block)]
        cleared.append(len(errors) - len(keep))
        return keep

    _edit_media(root, barcode, change)
    return cleared[0]


def _edit_media(root: Path, barcode: str,
                change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    with _editing(root) as doc:
        media = doc.setdefault("media", {})
        errors = change(list(media.get(barcode, [])))
        if errors:
            media[barcode] = sorted(errors, key=lambda e: (e["partition"], e["block"]))
        else:
            media.pop(barcode, None)


def listing(root: Path) -> dict[str, Any]:
    """The faults file as it stands (for ``--json`` and tests)."""
    try:
        return _parse((Path(root) / FAULTS_NAME).read_bytes())
    except OSError:
        return {}
