"""The library's shape: how many drives, slots and mailslots, which models, which addresses.

A library is described by ``<root>/library.toml``. The file is small and meant to be read and
edited by people, so it is loaded with :mod:`tomllib` and written by a tiny writer here (the
values are only strings, numbers and booleans, so a full TOML serializer is not needed).
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

    # When the drives ask for cleaning (TapeAlert 21 CLEAN PERIODIC), and what cleaning takes
    # (vtl.cleaning). Absent: drives never ask, a cleaning cartridge cleans for 30 s.
    [cleaning]
    after_hours = 0                # hours with a cartridge loaded since the last cleaning (0: off)
    after_loads = 0                # loads since the last cleaning (0: off)
    seconds = 30                   # how long a cleaning cartridge keeps a drive busy
    cycles = 50                    # cleanings a new cleaning cartridge (CLNxxxL1) is good for
    [cleaning.drive1]              # one drive's own after_hours / after_loads
    after_loads = 100

    # One table per initiator allowed in (``vtl target acl add``); with any, only these log in.
    [acl."iqn.1994-05.com.redhat:backup1"]
    chap_user = "backup1"          # its own CHAP (else the [iscsi] one, if any)
    chap_secret = "..."
    mutual_user = ""               # its own mutual CHAP (else the [iscsi] one)
    mutual_secret = ""
    luns = [0, 1]                  # the LUNs it sees (absent: all)

    [s3]                           # the object store for archived cartridges (vtl.s3_settings)
    location = "s3://vault/lib1"
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vtl.errors import LibraryError
from vtl.s3_settings import S3Settings

CONFIG_NAME = "library.toml"
# Where both CLIs look for the library without --root: $VTL_ROOT, else this.
ROOT_ENV = "VTL_ROOT"
DEFAULT_ROOT = "./vtl-library"

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
# Settings a library.toml must state: a default here would silently move every element.
_LAYOUT_KEYS = ("drives", "slots", "mailslots")


def default_root() -> Path:
    """The library directory when no ``--root`` is given: ``$VTL_ROOT``, else ./vtl-library."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


class ConfigError(Exception):
    """The library configuration is missing or invalid (one-line message)."""


class ConfigFileError(ConfigError):
    """``library.toml`` exists but cannot be used: unreadable, not UTF-8, not TOML, empty, or
    holding a wrong value. The library is damaged, not the command line (the CLIs exit 1)."""


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


STORES = ("plain", "dedup")


@dataclass
class InitiatorAcl:
    """What one initiator may do on the target: log in (with its own CHAP and mutual CHAP
    credentials, when set, instead of the library's), and see which LUNs (None: all)."""

    chap_user: str = ""
    chap_secret: str = ""
    mutual_user: str = ""
    mutual_secret: str = ""
    luns: tuple[int, ...] | None = None

    def validate(self, iqn: str) -> None:
        if not _IQN_RE.match(iqn):
            raise ConfigError(f"invalid initiator name {iqn!r} in [acl]")
        for key in ("chap_user", "chap_secret", "mutual_user", "mutual_secret"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"acl {iqn}: {key} must be a string")
        for user, secret, what in ((self.chap_user, self.chap_secret, "chap"),
                                   (self.mutual_user, self.mutual_secret, "mutual")):
            if bool(user) != bool(secret):
                raise ConfigError(f"acl {iqn}: {what}_user and {what}_secret go together")
            if secret and not 12 <= len(secret) <= 255:
                raise ConfigError(f"acl {iqn}: {what}_secret must be 12 to 255 characters")
        if self.mutual_user and not self.chap_user:
            raise ConfigError(f"acl {iqn}: mutual CHAP needs its chap_user/chap_secret too")
        if self.luns is not None and (
            not isinstance(self.luns, tuple)
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 16384
                       for n in self.luns)):
            raise ConfigError(f"acl {iqn}: luns must be a list of LUN numbers")

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {k: getattr(self, k) for k in
                               ("chap_user", "chap_secret", "mutual_user", "mutual_secret")}
        if self.luns is not None:
            doc["luns"] = list(self.luns)
        return doc

    @classmethod
    def from_dict(cls, iqn: str, doc: Any) -> InitiatorAcl:
        if not isinstance(doc, dict):
            raise ConfigError(f"acl {iqn!r} must be a table")
        known = {f.name for f in fields(cls)}
        for key in doc:
            if key not in known:
                raise ConfigError(f"unknown setting acl.{iqn!r}.{key}")
        doc = dict(doc)
        if "luns" in doc:
            if not isinstance(doc["luns"], list):
                raise ConfigError(f"acl {iqn}: luns must be a list of LUN numbers")
            doc["luns"] = tuple(doc["luns"])
        acl = cls(**doc)
        acl.validate(iqn)
        return acl


@dataclass
class CleaningConfig:
    """When a drive asks for cleaning and what cleaning takes (``[cleaning]``; vtl.cleaning).

    A real LTO drive asks for cleaning from its own wear counters; here the admin chooses
    the counter: hours with a cartridge loaded (``after_hours``, the stand-in for tape
    motion hours), loads (``after_loads``), or both (whichever comes first); 0 turns one
    off, and both are off by default, so drives never ask unless told to. ``drives`` holds
    per-drive overrides of the two (drive index -> {"after_hours": h, "after_loads": n})."""

    after_hours: float = 0
    after_loads: int = 0
    seconds: float = 30
    cycles: int = 50
    drives: dict[int, dict[str, float]] = field(default_factory=dict)

    def thresholds(self, drive: int) -> tuple[float, int]:
        """(after_hours, after_loads) for drive ``drive`` (0-based)."""
        own = self.drives.get(drive, {})
        return (own.get("after_hours", self.after_hours),
                int(own.get("after_loads", self.after_loads)))

    def validate(self) -> None:
        tables = [("cleaning", {"after_hours": self.after_hours,
                                "after_loads": self.after_loads})]
        tables += [(f"cleaning.drive{n}", t) for n, t in sorted(self.drives.items())]
        for name, table in tables:
            for key, value in table.items():
                if key not in ("after_hours", "after_loads"):
                    raise ConfigError(f"unknown setting {name}.{key}")
                _check_number(f"{name}.{key}", value, integer=key == "after_loads")
        _check_number("cleaning.seconds", self.seconds, integer=False, upper=3600)
        _check_number("cleaning.cycles", self.cycles, integer=True, upper=1000)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {k: getattr(self, k)
                               for k in ("after_hours", "after_loads", "seconds", "cycles")}
        doc.update({f"drive{n}": dict(t) for n, t in sorted(self.drives.items())})
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> CleaningConfig:
        if not isinstance(doc, dict):
            raise ConfigError("[cleaning] must be a table")
        values: dict[str, Any] = {}
        drives: dict[int, dict[str, float]] = {}
        for key, value in doc.items():
            m = re.fullmatch(r"drive(\d{1,2})", key)
            if m and isinstance(value, dict):
                drives[int(m.group(1))] = dict(value)
            elif key in ("after_hours", "after_loads", "seconds", "cycles"):
                values[key] = value
            else:
                raise ConfigError(f"unknown setting cleaning.{key}")
        config = cls(**values, drives=drives)
        config.validate()
        return config


def _check_number(name: str, value: Any, *, integer: bool, upper: float = 1_000_000) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 <= value <= upper:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {what} from 0 to {upper:.0f}, not {value!r}")


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
    # Where cartridge data lives (tape_formats/store): "plain" files, or "dedup" chunks
    # stored once per library under <root>/store. Chosen at init; plain cartridges keep
    # working in a dedup library.
    store: str = "plain"
    # First element address of each element type (SMC mode page 0x1D).
    transport_base: int = 1
    mailslot_base: int = 16
    drive_base: int = 256
    slot_base: int = 1024
    iscsi: IscsiConfig = field(default_factory=IscsiConfig)
    # Per-initiator access, by initiator IQN (``[acl."IQN"]`` tables; see InitiatorAcl).
    acls: dict[str, InitiatorAcl] = field(default_factory=dict)
    # The object store for archived cartridges (``[s3]``, vtl.s3_settings).
    s3: S3Settings = field(default_factory=S3Settings)
    # When drives ask for cleaning, what cleaning takes (``[cleaning]``).
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)

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
        if self.store not in STORES:
            raise ConfigError(f"unknown store {self.store!r} (known: {', '.join(STORES)})")
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
        for iqn, acl in self.acls.items():
            acl.validate(iqn)
        try:
            self.s3.validate()
        except LibraryError as e:
            raise ConfigError(str(e)) from None
        self.cleaning.validate()
        for drive in self.cleaning.drives:
            if drive >= self.drives:
                raise ConfigError(f"[cleaning.drive{drive}]: the library has no drive {drive}")
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
        if self.store != "plain":  # absent from older files: plain
            doc["store"] = self.store
        doc["addresses"] = {
            "transport": self.transport_base,
            "mailslots": self.mailslot_base,
            "drives": self.drive_base,
            "slots": self.slot_base,
        }
        doc["iscsi"] = {f.name: getattr(self.iscsi, f.name) for f in fields(IscsiConfig)}
        if self.acls:
            doc["acl"] = {iqn: acl.to_dict() for iqn, acl in sorted(self.acls.items())}
        if self.s3.to_dict():
            doc["s3"] = self.s3.to_dict()
        if self.cleaning != CleaningConfig():  # absent from older files: the defaults
            doc["cleaning"] = self.cleaning.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LibraryConfig:
        """Build and validate a config; unknown keys are errors (they are usually typos)."""
        doc = dict(doc)
        addresses = doc.pop("addresses", {}) or {}
        iscsi = doc.pop("iscsi", {}) or {}
        acl_tables = doc.pop("acl", {}) or {}
        try:
            s3 = S3Settings.from_dict(doc.pop("s3", {}))
        except LibraryError as e:
            raise ConfigError(str(e)) from None
        cleaning = CleaningConfig.from_dict(doc.pop("cleaning", {}))
        if not all(isinstance(t, dict) for t in (addresses, iscsi, acl_tables)):
            raise ConfigError("[addresses], [iscsi] and [acl] must be tables")
        acls = {iqn: InitiatorAcl.from_dict(iqn, t) for iqn, t in acl_tables.items()}
        top = {"name", "drives", "slots", "mailslots", "media", "changer_model", "drive_model",
               "serial_prefix", "store"}
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
        return cls(**kwargs, iscsi=IscsiConfig(**iscsi), acls=acls, s3=s3,
                   cleaning=cleaning).validate()

    @classmethod
    def load(cls, root: Path) -> LibraryConfig:
        """Read ``<root>/library.toml``; ConfigError if missing, ConfigFileError if invalid."""
        path = Path(root) / CONFIG_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"no library at {root} ({CONFIG_NAME} not found)") from None
        except OSError as e:
            raise ConfigFileError(f"cannot read {path}: {e.strerror}") from None
        return cls.parse(raw, path)

    @classmethod
    def parse(cls, raw: bytes, path: Path) -> LibraryConfig:
        """The config in ``raw`` (the bytes of ``path``); every problem one line naming it."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigFileError(
                f"{path}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
            ) from None
        import tomllib  # here, not at the top: `--help` never reads a config

        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigFileError(f"{path}: not valid TOML: {e}") from None
        if not doc:
            raise ConfigFileError(
                f"{path} is empty: it must describe the library (as 'vtl init' writes it)"
            )
        try:
            config = cls.from_dict(doc)
        except (TypeError, ConfigError) as e:  # TypeError: a value dataclasses reject
            raise ConfigFileError(f"{path}: {e}") from None
        missing = [key for key in _LAYOUT_KEYS if key not in doc]
        if missing:
            raise ConfigFileError(
                f"{path}: {', '.join(missing)} missing (the library's layout must be explicit)"
            )
        return config

    def save(self, root: Path) -> Path:
        """Validate, then write ``<root>/library.toml`` atomically (temp file + rename), readable
        by the owner only (or the library's group): it may hold CHAP secrets."""
        from vtl.access import file_mode

        self.validate()
        path = Path(root) / CONFIG_NAME
        tmp = path.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode(Path(root)))
        os.fchmod(fd, file_mode(Path(root)))  # a stale temp file keeps its old mode otherwise
        with os.fdopen(fd, "wb") as f:
            f.write(dumps_toml(self.to_dict()).encode("utf-8"))
            f.flush()
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
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(doc: dict[str, Any]) -> str:
    """Write a dict of scalars, lists of scalars, tables and tables of tables (``[acl."IQN"]``)
    as TOML (enough for library.toml)."""
    lines: list[str] = []
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for key, value in doc.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if len(subtables) < len(table) or not table:
            lines += ["", f"[{name}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k not in subtables]
        for sub, values in subtables.items():
            lines += ["", f"[{name}.{_toml_value(sub)}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
