"""The device identities the VTL emulates, documented in one table.

Backup software (Windows drivers, Veeam, NetBackup, Bacula's device configs, IBM's lin_tape)
picks its driver by the exact INQUIRY vendor and product strings, so each emulated model
below reproduces the strings of a real device. mhVTL's list of emulated models is
undocumented, which is a known complaint; this docstring is ours.

Emulated tape drives (``drive_identity(name)``; INQUIRY vendor / product / revision):

=================  ========  ================  ====  =====================================
name               vendor    product           rev   media it writes (reads)
=================  ========  ================  ====  =====================================
IBM-TD5            IBM       ULT3580-TD5       G350  LTO-5, LTO-4 (LTO-3..5)
IBM-TD6            IBM       ULT3580-TD6       G9N1  LTO-6, LTO-5 (LTO-4..6)
IBM-TD7            IBM       ULT3580-TD7       J4D1  LTO-7, LTO-6 (LTO-5..7)
IBM-TD8 (default)  IBM       ULT3580-TD8       K4K1  LTO-8, LTO-7 (LTO-7..8)
IBM-TD9            IBM       ULT3580-TD9       N9M1  LTO-9, LTO-8 (LTO-8..9)
HP-LTO8            HP        Ultrium 8-SCSI    Q3B7  LTO-8, LTO-7 (LTO-7..8)
HPE-LTO8           HPE       Ultrium 8-SCSI    Q3B7  LTO-8, LTO-7 (LTO-7..8)
HPE-LTO9           HPE       Ultrium 9-SCSI    Q3B7  LTO-9, LTO-8 (LTO-8..9)
HP-LTO7            HP        Ultrium 7-SCSI    P3CW  LTO-7, LTO-6 (LTO-5..7)
=================  ========  ================  ====  =====================================

Emulated medium changers (``changer_identity(name)``):

=====================  ========  ================  ====  ================================
name                   vendor    product           rev   notes
=====================  ========  ================  ====  ================================
IBM-3573-TL (default)  IBM       3573-TL           F.11  IBM TS3100/TS3200 (lin_tape, Veeam)
STK-L700               STK       L700              0310  StorageTek L700 (AWS Tape Gateway)
IBM-03584              IBM       03584L32          F360  IBM TS3500/TS4500 family
=====================  ========  ================  ====  ================================

Names are matched ignoring case, spaces and punctuation; the product string (``ULT3580-TD8``,
``3573-TL``) and vendor plus product (``IBM-ULT3580-TD8``, ``HP Ultrium 8-SCSI``, the form
``library.toml`` uses) are accepted too; ``Ultrium 8-SCSI`` alone is HP-LTO8. HPE drives of
LTO-8 and later say ``HPE`` where older ones said ``HP``, and IBM's LTFS accepts an LTO-8/9
HPE drive only by that vendor string: HPE-LTO8 is what such a drive reports, HP-LTO8 stays
as it was for configurations that name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tape_formats.media import MEDIA

# Density code and native capacity are facts of the media generation, kept once in
# tape_formats.media (the cartridge file records them too); the drive models see them through
# these two views rather than through tables of their own that could drift apart.
DENSITY: dict[str, int] = {name: m.density_code for name, m in MEDIA.items()}
NATIVE_CAPACITY_MB: dict[str, int] = {  # 10^6 bytes, as REPORT DENSITY SUPPORT reports it
    name: m.capacity // 1_000_000 for name, m in MEDIA.items()
}
# Physical LTO facts only REPORT DENSITY SUPPORT needs; tape_formats.media has no use for them.
TRACKS = {"LTO-3": 704, "LTO-4": 896, "LTO-5": 1280, "LTO-6": 2176, "LTO-7": 3584,
          "LTO-8": 6656, "LTO-9": 8960}
BITS_PER_MM = {"LTO-3": 9638, "LTO-4": 13250, "LTO-5": 15142, "LTO-6": 15142, "LTO-7": 19094,
               "LTO-8": 20668, "LTO-9": 20668}
MEDIA_WIDTH_MM_X10 = 127  # half inch
MEDIA_LENGTH_M = {"LTO-3": 680, "LTO-4": 820, "LTO-5": 846, "LTO-6": 846, "LTO-7": 960,
                  "LTO-8": 960, "LTO-9": 1035}


# The MEDIUM TYPE an IBM LTO drive reports in the mode parameter header for a data cartridge
# of each generation (0x88: LTO-8) and for a WORM one (0x8C; from LTO-3); IBM's LTFS checks
# it against the density before it formats, and mtx's tapeinfo prints it. Other vendors
# report 0 for data (and LTFS takes the type from the density for them), 1 for WORM.
IBM_MEDIUM_TYPE = {f"LTO-{g}": g * 0x10 + 0x08 for g in range(1, 10)}
IBM_WORM_MEDIUM_TYPE = {f"LTO-{g}": g * 0x10 + 0x0C for g in range(3, 10)}


@dataclass(frozen=True, kw_only=True)
class DeviceIdentity:
    """What INQUIRY says about a device. Strings are padded/truncated to the SPC field widths
    (vendor 8, product 16, revision 4)."""

    name: str
    vendor: str
    product: str
    revision: str
    description: str = ""
    # IEEE OUI used in the NAA designator of VPD 0x83 (the real vendor's OUI).
    ieee_oui: int = 0x005076  # IBM
    # Version descriptors for standard INQUIRY bytes 58..73 (SAM-5, SPC-4, command set).
    version_descriptors: tuple[int, ...] = (0x00A0, 0x0460)


@dataclass(frozen=True, kw_only=True)
class DriveIdentity(DeviceIdentity):
    """An LTO tape drive model: which media generations it writes and reads."""

    generation: int  # LTO generation number (8 for TD8)
    write_media: tuple[str, ...]  # media names it can write, newest first
    read_media: tuple[str, ...]  # media names it can read, newest first
    max_block_size: int = 8 * 1024 * 1024
    version_descriptors: tuple[int, ...] = (0x00A0, 0x0460, 0x0340)  # + SSC-3
    # Extra VPD pages a real drive answers (e.g. IBM firmware/drive component pages).
    vpd: dict[int, bytes] = field(default_factory=dict, compare=False, hash=False)

    @property
    def native_media(self) -> str:
        return self.write_media[0]

    def can_read(self, media: str) -> bool:
        return media in self.read_media

    def can_write(self, media: str) -> bool:
        return media in self.write_media


@dataclass(frozen=True, kw_only=True)
class ChangerIdentity(DeviceIdentity):
    """A medium changer model. Element counts come from the library config, not from here."""

    version_descriptors: tuple[int, ...] = (0x00A0, 0x0460, 0x0480)  # + SMC-3
    # Whether the real model reports import/export elements and barcode reader support.
    has_barcode_reader: bool = True
    max_drives: int = 64
    max_slots: int = 10000


def _ibm_td(gen: int, revision: str, writes: tuple[int, ...], reads: tuple[int, ...]) -> DriveIdentity:
    return DriveIdentity(
        name=f"IBM-TD{gen}",
        vendor="IBM",
        product=f"ULT3580-TD{gen}",
        revision=revision,
        description=f"IBM LTO-{gen} full-height SCSI/SAS drive (TS2280-class)",
        generation=gen,
        write_media=tuple(f"LTO-{g}" for g in writes),
        read_media=tuple(f"LTO-{g}" for g in reads),
    )


def _hp(gen: int, writes: tuple[str, ...], reads: tuple[str, ...], *, revision: str,
        description: str, vendor: str = "HP") -> DriveIdentity:
    """An HPE StoreEver drive (IEEE OUI 00-14-38), named for its vendor string."""
    return DriveIdentity(
        name=f"{vendor}-LTO{gen}",
        vendor=vendor,
        product=f"Ultrium {gen}-SCSI",
        revision=revision,
        description=description,
        ieee_oui=0x001438,
        generation=gen,
        write_media=writes,
        read_media=reads,
    )


def _hpe(gen: int, writes: tuple[str, ...], reads: tuple[str, ...]) -> DriveIdentity:
    return _hp(gen, writes, reads, vendor="HPE", revision="Q3B7",
               description=f"HPE StoreEver LTO-{gen} Ultrium (vendor string HPE)")


DRIVES: dict[str, DriveIdentity] = {
    d.name: d
    for d in (
        _ibm_td(5, "G350", (5, 4), (5, 4, 3)),
        _ibm_td(6, "G9N1", (6, 5), (6, 5, 4)),
        _ibm_td(7, "J4D1", (7, 6), (7, 6, 5)),
        _ibm_td(8, "K4K1", (8, 7), (8, 7)),
        _ibm_td(9, "N9M1", (9, 8), (9, 8)),
        _hp(8, ("LTO-8", "LTO-7"), ("LTO-8", "LTO-7"), revision="Q3B7",
            description="HPE StoreEver LTO-8 Ultrium 30750"),
        _hpe(8, ("LTO-8", "LTO-7"), ("LTO-8", "LTO-7")),
        _hpe(9, ("LTO-9", "LTO-8"), ("LTO-9", "LTO-8")),
        _hp(7, ("LTO-7", "LTO-6"), ("LTO-7", "LTO-6", "LTO-5"), revision="P3CW",
            description="HPE StoreEver LTO-7 Ultrium 15000"),
    )
}
DEFAULT_DRIVE = "IBM-TD8"

CHANGERS: dict[str, ChangerIdentity] = {
    c.name: c
    for c in (
        ChangerIdentity(
            name="IBM-3573-TL",
            vendor="IBM",
            product="3573-TL",
            revision="F.11",
            description="IBM System Storage TS3100/TS3200 tape library",
        ),
        ChangerIdentity(
            name="STK-L700",
            vendor="STK",
            product="L700",
            revision="0310",
            description="StorageTek L700 tape library",
            ieee_oui=0x00104F,
        ),
        ChangerIdentity(
            name="IBM-03584",
            vendor="IBM",
            product="03584L32",
            revision="F360",
            description="IBM TS3500/TS4500 (3584) tape library",
        ),
    )
}
DEFAULT_CHANGER = "IBM-3573-TL"


class UnknownIdentity(ValueError):
    """The config names a model we do not emulate (one-line message listing the choices)."""


def _norm(text: str) -> str:
    """Case, spaces and punctuation do not matter in model names ("IBM-ULT3580-TD8")."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _lookup(table: dict, name: str | None, default: str, kind: str):
    if name is None or name == "":
        return table[default]
    want = _norm(name)
    for ident in table.values():
        # table name, product, or VENDOR-PRODUCT as library.toml writes it
        if want in (_norm(ident.name), _norm(ident.product), _norm(ident.vendor + ident.product)):
            return ident
    choices = ", ".join(table)
    raise UnknownIdentity(f"unknown {kind} model {name!r}; emulated models: {choices}")


def drive_identity(name: str | None = None) -> DriveIdentity:
    """The drive model called ``name`` (table name or product string); default IBM-TD8."""
    return _lookup(DRIVES, name, DEFAULT_DRIVE, "drive")


def changer_identity(name: str | None = None) -> ChangerIdentity:
    """The changer model called ``name`` (table name or product string); default IBM-3573-TL."""
    return _lookup(CHANGERS, name, DEFAULT_CHANGER, "changer")


def drive_for_media(media: str) -> DriveIdentity:
    """The IBM drive whose native generation is ``media`` (e.g. "LTO-5" -> ULT3580-TD5)."""
    for ident in DRIVES.values():
        if ident.vendor == "IBM" and ident.native_media == media:
            return ident
    raise UnknownIdentity(f"no emulated drive writes {media!r} natively")


def model_table() -> list[dict[str, str]]:
    """Every emulated model as plain rows (for a CLI listing or --json), drives first."""
    rows: list[dict[str, str]] = []
    for d in DRIVES.values():
        rows.append({
            "kind": "drive", "name": d.name, "vendor": d.vendor, "product": d.product,
            "revision": d.revision, "default": "yes" if d.name == DEFAULT_DRIVE else "",
            "writes": ", ".join(d.write_media), "reads": ", ".join(d.read_media),
            "description": d.description,
        })
    for c in CHANGERS.values():
        rows.append({
            "kind": "changer", "name": c.name, "vendor": c.vendor, "product": c.product,
            "revision": c.revision, "default": "yes" if c.name == DEFAULT_CHANGER else "",
            "writes": "", "reads": "", "description": c.description,
        })
    return rows
