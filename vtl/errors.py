"""The library's error types: one base (:class:`LibraryError`) whose message is one line.

Both CLIs print any :class:`LibraryError` as one ``error: ...`` line, so every failure a
user can cause in :mod:`vtl` is one of these, never a bare ``sqlite3`` or ``OSError``.
"""

from __future__ import annotations


class LibraryError(Exception):
    """Any library failure; the message is one line fit for ``error: ...``."""


class NoLibrary(LibraryError):
    """There is no (valid) library at the given root."""


class CatalogDamaged(LibraryError):
    """The media catalog file is missing, empty or not a catalog; the message says what to do."""


class UnknownBarcode(LibraryError):
    """No cartridge with this barcode in the catalog."""


class DuplicateBarcode(LibraryError):
    """A cartridge with this barcode already exists."""


class BadBarcode(LibraryError):
    """The label is not a valid LTO barcode (or does not match the media asked for)."""


class InvalidElement(LibraryError):
    """No element at that address, or the element cannot take part in the operation."""


class SourceEmpty(LibraryError):
    """The source element holds no cartridge."""


class DestinationFull(LibraryError):
    """The destination element is occupied (or no free element of the kind asked for)."""


class MediumRemovalPrevented(LibraryError):
    """The drive's PREVENT ALLOW MEDIUM REMOVAL is set."""


class CartridgeBusy(LibraryError):
    """The cartridge is open in another process, or the drive is claimed by another process."""


class CartridgeInDrive(LibraryError):
    """The operation needs the cartridge out of every drive."""


class CartridgeOutside(LibraryError):
    """The cartridge is outside the library (exported to the vault)."""


class CartridgeProtected(LibraryError):
    """The cartridge is WORM or write protected and the operation would change its data."""


class CartridgeMissing(LibraryError):
    """The catalog knows the cartridge but its file is missing or unreadable."""


class CartridgeArchived(LibraryError):
    """The cartridge lives only in the object store; ``vtl cartridge retrieve`` brings it back."""
