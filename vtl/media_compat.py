"""Which cartridges this library's drives can use, checked as a real library checks them:
a drive writes its own LTO generation and the one before, and reads one more back (the table
is :mod:`vtl.scsi.identities`). The admin commands refuse what no drive could use, before
anything changes: ``cartridge create`` a generation the drives cannot write (a blank
cartridge nobody can write is useless), ``load`` one they cannot read. The SCSI models keep
their own checks at mount time (INCOMPATIBLE MEDIUM INSTALLED) for what comes in otherwise.
"""

from __future__ import annotations

from vtl.config import LibraryConfig
from vtl.errors import LibraryError


class IncompatibleMedia(LibraryError):
    """The library's drive model cannot write (or read) this media generation."""


def _generations(media: tuple[str, ...]) -> str:
    ordered = sorted(media)
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}..{ordered[-1]}"


def check_writable(config: LibraryConfig, media: str, barcode: str = "") -> None:
    """IncompatibleMedia unless the library's drives can write ``media``."""
    from vtl.scsi.identities import drive_identity

    drive = drive_identity(config.drive_model)
    if not drive.can_write(media):
        what = f"{barcode} ({media})" if barcode else f"{media} cartridges"
        raise IncompatibleMedia(
            f"{what}: the library's {config.drive_model} drives write "
            f"{_generations(drive.write_media)} only")


def check_readable(config: LibraryConfig, media: str, barcode: str) -> None:
    """IncompatibleMedia unless the library's drives can read ``media``."""
    from vtl.scsi.identities import drive_identity

    drive = drive_identity(config.drive_model)
    if not drive.can_read(media):
        raise IncompatibleMedia(
            f"{barcode} is {media}: the library's {config.drive_model} drives read "
            f"{_generations(drive.read_media)} only")


def drive_model_for(media: str) -> str:
    """The drive model ``vtl init --media`` picks when no ``--drive-model`` is given: the IBM
    drive of that generation, as library.toml names it (``IBM-ULT3580-TD7``)."""
    from vtl.scsi.identities import drive_for_media

    ident = drive_for_media(media)
    return f"{ident.vendor}-{ident.product}"
