"""The library's shape: how many drives, slots and mailslots, which models, which addresses.

A library is described by ``<root>/library.toml``. The file is small and meant to be read and
edited by people, so it is loaded with :mod:`tomllib` and written by a tiny writer here (the
values are only strings, integers and booleans, so a full TOML serializer is not needed).
Validation happens on load and on save, and each problem is one line, because the CLI prints
it as ``error: ...``.

Example::

    name = "vtl"
    drives = 4
    slots = 40
    mailslots = 4
    media = "LTO-8"
    changer_model = "IBM-3573-TL"
    drive_model = "IBM-ULT3580-TD8"
    serial_prefix = "VTL"

    [addresses]
    transport = 1
    mailslots = 16
    drives = 256
    slots = 1024

    [iscsi]
    portal = "127.0.0.1:3260"
    target_iqn = "iqn.2026-01.org.vtl-ebm:vtl"
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "library.toml"

# Media generations the library knows even before tape_formats.media is importable; the real
# table (capacities, density codes) lives there.
KNOWN_MEDIA = ("LTO-3", "LTO-4", "LTO-5", "LTO-6", "LTO-7", "LTO-8", "LTO-9")

# Models with identities in vtl.scsi.identities; kept open-ended (a new identity only needs a
# name there), so validation only checks the shape "VENDOR-PRODUCT".
_MODEL_RE = re.compile(r"^[A-Za-z0-9]+-[A-Za-z0-9 ._-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SERIAL_PREFIX_RE = re.compile(r"^[A-Z0-9]{1,6}$")
_IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$")

MAX_ELEMENTS = 0xFFFF  # element addresses are 16-bit in SMC


class ConfigError(Exception):
    """The library configuration is missing or invalid (one-line message)."""


@dataclass
class IscsiConfig:
    """Where the embedded iSCSI target listens and what it calls itself."""

    portal: str = "127.0.0.1:3260"
    target_iqn: str = "iqn.2026-01.org.vtl-ebm:vtl"
    # Optional CHAP (empty = no authentication); mutual CHAP when the mutual_* are set too.
    chap_user: str = ""
    chap_secret: str = ""
    mutual_user: str = ""
    mutual_secret: str = ""

    @property
    def portal_host(self) -> str:
        return self.portal.rsplit(":", 1)[0].strip("[]")

    @property
    def portal_port(self) -> int:
        return int(self.portal.rsplit(":", 1)[1])


@dataclass
class LibraryConfig:
    """One library: a changer, ``drives`` drives, ``slots`` slots and ``mailslots`` mailslots."""

    name: str = "vtl"
    drives: int = 4
    slots: int = 40
    mailslots: int = 4
    media: str = "LTO-8"  # default media for new cartridges when the barcode does not say
    changer_model: str = "IBM-3573-TL"
    drive_model: str = "IBM-ULT3580-TD8"
    serial_prefix: str = "VTL"
    # First element address of each element type (SMC mode page 0x1D).
    transport_base: int = 1
    mailslot_base: int = 16
    drive_base: int = 256
    slot_base: int = 1024
    iscsi: IscsiConfig = field(default_factory=IscsiConfig)

    # ---- derived identities -------------------------------------------------------------
    def drive_serial(self, index: int) -> str:
        """Serial number of drive ``index``: stable for the library, unique per drive."""
        return f"{self.serial_prefix}D{index + 1:0{10 - len(self.serial_prefix) - 1}d}"

    @property
    def changer_serial(self) -> str:
        return f"{self.serial_prefix}C{1:0{10 - len(self.serial_prefix) - 1}d}"

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> LibraryConfig:
        """Raise ConfigError naming the first bad value; return self when all is well."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(f"invalid library name {self.name!r} (letters, digits, . _ -)")
        for key, lo, hi in (("drives", 1, 64), ("slots", 1, 4096), ("mailslots", 0, 64)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"{key} must be an integer from {lo} to {hi}, not {value!r}")
        if self.media not in _media_names():
            raise ConfigError(
                f"unknown media {self.media!r} (known: {', '.join(sorted(_media_names()))})"
            )
        for key in ("changer_model", "drive_model"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _MODEL_RE.match(value):
                raise ConfigError(f"invalid {key} {value!r} (expected VENDOR-PRODUCT)")
        _check_identities(self.changer_model, self.drive_model)
        if not isinstance(self.serial_prefix, str) or not _SERIAL_PREFIX_RE.match(
            self.serial_prefix
        ):
            raise ConfigError(
                f"invalid serial_prefix {self.serial_prefix!r} (1-6 of A-Z 0-9)"
            )
        ranges = [
            ("transport", self.transport_base, 1),
            ("mailslots", self.mailslot_base, self.mailslots),
            ("drives", self.drive_base, self.drives),
            ("slots", self.slot_base, self.slots),
        ]
        for key, base, count in ranges:
            if not isinstance(base, int) or isinstance(base, bool) or base < 0:
                raise ConfigError(f"address base for {key} must be a non-negative integer")
            if base + count - 1 > MAX_ELEMENTS:
                raise ConfigError(f"addresses for {key} run past {MAX_ELEMENTS:#x}")
        spans = sorted((b, b + c, k) for k, b, c in ranges if c)
        for (_b1, e1, k1), (b2, _e2, k2) in zip(spans, spans[1:], strict=False):
            if b2 < e1:
                raise ConfigError(f"element addresses of {k1} and {k2} overlap")
        portal = self.iscsi.portal
        m = re.match(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$", str(portal))
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ConfigError(f"invalid iscsi portal {portal!r} (expected HOST:PORT)")
        if not _IQN_RE.match(str(self.iscsi.target_iqn)):
            raise ConfigError(f"invalid iscsi target_iqn {self.iscsi.target_iqn!r}")
        if bool(self.iscsi.chap_user) != bool(self.iscsi.chap_secret):
            raise ConfigError("iscsi chap_user and chap_secret must be set together")
        if bool(self.iscsi.mutual_user) != bool(self.iscsi.mutual_secret):
            raise ConfigError("iscsi mutual_user and mutual_secret must be set together")
        return self

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The TOML document as nested dicts (also the ``--json`` form)."""
        doc: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "name",
                "drives",
                "slots",
                "mailslots",
                "media",
                "changer_model",
                "drive_model",
                "serial_prefix",
            )
        }
        doc["addresses"] = {
            "transport": self.transport_base,
            "mailslots": self.mailslot_base,
            "drives": self.drive_base,
            "slots": self.slot_base,
        }
        doc["iscsi"] = {f.name: getattr(self.iscsi, f.name) for f in fields(IscsiConfig)}
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LibraryConfig:
        """Build and validate a config; unknown keys are errors (they are usually typos)."""
        doc = dict(doc)
        addresses = doc.pop("addresses", {}) or {}
        iscsi = doc.pop("iscsi", {}) or {}
        if not isinstance(addresses, dict) or not isinstance(iscsi, dict):
            raise ConfigError("[addresses] and [iscsi] must be tables")
        top = {"name", "drives", "slots", "mailslots", "media", "changer_model", "drive_model",
               "serial_prefix"}
        for key in doc:
            if key not in top:
                raise ConfigError(f"unknown setting {key!r}")
        addr_keys = {"transport": "transport_base", "mailslots": "mailslot_base",
                     "drives": "drive_base", "slots": "slot_base"}
        for key in addresses:
            if key not in addr_keys:
                raise ConfigError(f"unknown setting addresses.{key!r}")
        iscsi_keys = {f.name for f in fields(IscsiConfig)}
        for key in iscsi:
            if key not in iscsi_keys:
                raise ConfigError(f"unknown setting iscsi.{key!r}")
        for key, value in iscsi.items():
            if not isinstance(value, str):
                raise ConfigError(f"iscsi.{key} must be a string")
        kwargs = dict(doc)
        kwargs.update({addr_keys[k]: v for k, v in addresses.items()})
        return cls(**kwargs, iscsi=IscsiConfig(**iscsi)).validate()

    @classmethod
    def load(cls, root: Path) -> LibraryConfig:
        """Read ``<root>/library.toml``; ConfigError if missing or invalid."""
        path = Path(root) / CONFIG_NAME
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"no library at {root} ({CONFIG_NAME} not found)") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        try:
            return cls.from_dict(doc)
        except TypeError as e:  # wrong value types that dataclass construction rejects
            raise ConfigError(f"{path}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save(self, root: Path) -> Path:
        """Validate, then write ``<root>/library.toml`` atomically (temp file + rename)."""
        self.validate()
        path = Path(root) / CONFIG_NAME
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text(dumps_toml(self.to_dict()), encoding="utf-8")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


def _check_identities(changer_model: str, drive_model: str) -> None:
    """The models must be ones the SCSI layer emulates (its table lists them)."""
    try:
        from vtl.scsi.identities import UnknownIdentity, changer_identity, drive_identity
    except ImportError:
        return
    try:
        changer_identity(changer_model)
        drive_identity(drive_model)
    except UnknownIdentity as e:
        raise ConfigError(str(e)) from None


def _media_names() -> set[str]:
    try:
        from tape_formats.media import MEDIA  # the lead's table, when present
    except ImportError:
        return set(KNOWN_MEDIA)
    return set(MEDIA) or set(KNOWN_MEDIA)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(doc: dict[str, Any]) -> str:
    """Write a one-level-nested dict of scalars as TOML (enough for library.toml)."""
    lines: list[str] = []
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for key, value in doc.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
