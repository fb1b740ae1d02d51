"""What a tape drive does with a cleaning cartridge, and how it says it wants one.

A cleaning cartridge (vtl.cleaning) found in the drive is mounted once, which counts a load
in its memory. With cleanings left, it cleans: the drive's wear counters start again
(``DriveBay.cleaned``), and for ``[cleaning] seconds`` every command that needs the medium
gets NOT READY 30/03 CLEANING CARTRIDGE INSTALLED (as IBM and HPE LTO drives report a
cleaning in progress), then the drive unloads it (NOT READY 3A/00 until the changer takes it
away). Worn out (no cleanings left), it does not clean: MEDIUM ERROR 30/03 and TapeAlert 22
EXPIRED CLEANING MEDIA, then the same unload. Either way TapeAlert 11 CLEANING MEDIA says a
cleaning cartridge was met where a data cartridge was expected.

Wear (vtl.cleaning.DriveUsage) past ``[cleaning]``'s threshold raises TapeAlert 21 CLEAN
PERIODIC ("cleaning requested"), past twice the threshold 20 CLEAN NOW ("cleaning
required"); both stay raised, LOG SENSE after LOG SENSE, until a cleaning, and REQUEST SENSE
with nothing else to say answers NO SENSE 00/17 CLEANING REQUESTED meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vtl import cleaning
from vtl.scsi.sense import CLEANING_CARTRIDGE_INSTALLED, CLEANING_IN_PROGRESS, MEDIUM_NOT_PRESENT

if TYPE_CHECKING:
    from tape_formats.cartridge import TapeCartridge
    from vtl.library import DriveBay

log = logging.getLogger(__name__)

# TapeAlert flags of cleaning (SSC-4 Annex A).
TA_CLEANING_MEDIA = 11
TA_CLEAN_NOW = 20
TA_CLEAN_PERIODIC = 21
TA_EXPIRED_CLEANING_MEDIA = 22
TA_INVALID_CLEANING_TAPE = 23
# Flags about the drive rather than the medium: kept when the cartridge changes.
CLEANING_FLAGS = frozenset((TA_CLEAN_NOW, TA_CLEAN_PERIODIC, TA_EXPIRED_CLEANING_MEDIA,
                            TA_INVALID_CLEANING_TAPE))


@dataclass
class CleaningRun:
    """One cleaning cartridge's stay in the drive: cleaning until ``until`` (monotonic)."""

    until: float
    expired: bool


class DriveCleaning:
    """The cleaning state of one drive (a TapeDrive's ``cleaning``); call under its lock."""

    def __init__(self, bay: DriveBay, tapealert: set[int],
                 unloaded: Callable[[], None]) -> None:
        self.bay = bay
        self.tapealert = tapealert  # the drive's event flags
        self.unloaded = unloaded  # tells the drive it has no medium loaded now
        self.run: CleaningRun | None = None

    def medium_changed(self) -> None:
        self.run = None

    def refuse(self, mount: Callable[[], TapeCartridge]) -> None:
        """The answer to a command that needs the medium while a cleaning cartridge is in
        the drive; always raises. ``mount`` mounts it (the drive's own error answers) the
        first time. Once done, the drive unloads it (``unloaded``: NOT READY 3A/00 from now
        on; a LOAD cleans again, as it would on a real drive)."""
        run = self.run
        if run is None:
            run = self.run = self._start(mount())
            raise (CLEANING_CARTRIDGE_INSTALLED if run.expired else CLEANING_IN_PROGRESS)()
        if not run.expired and cleaning.monotonic() < run.until:
            raise CLEANING_IN_PROGRESS()
        self.run = None
        self.unloaded()
        raise MEDIUM_NOT_PRESENT()

    def _start(self, cart: TapeCartridge) -> CleaningRun:
        """A cleaning cartridge was just mounted (a load counted in its memory)."""
        bay = self.bay
        self.tapealert.add(TA_CLEANING_MEDIA)
        left = cleaning.cleanings_left(cart.mam)
        if left < 0:
            log.warning("drive %s: cleaning cartridge %s is worn out", bay.index, cart.barcode)
            self.tapealert.add(TA_EXPIRED_CLEANING_MEDIA)
            return CleaningRun(cleaning.monotonic(), expired=True)
        bay.cleaned()
        self.tapealert.difference_update((TA_CLEAN_NOW, TA_CLEAN_PERIODIC))
        log.info("drive %s: cleaned with %s (%d cleanings left)", bay.index, cart.barcode, left)
        seconds = bay.library.config.cleaning.seconds
        return CleaningRun(cleaning.monotonic() + seconds, expired=False)

    # ------------------------------------------------------------------ wear
    def wear_flags(self) -> set[int]:
        """TapeAlert flags of the drive's wear under ``[cleaning]``: 21, and 20 past twice
        the threshold."""
        bay = self.bay
        policy = bay.library.config.cleaning
        usage = bay.usage
        if not usage.cleaning_due(policy, bay.index):
            return set()
        hours, loads = policy.thresholds(bay.index)
        overdue = bool((hours and usage.loaded_seconds >= 2 * hours * 3600)
                       or (loads and usage.loads >= 2 * loads))
        return {TA_CLEAN_PERIODIC, TA_CLEAN_NOW} if overdue else {TA_CLEAN_PERIODIC}

    @property
    def requested(self) -> bool:
        """The drive asks for cleaning (00/17 in REQUEST SENSE, log page 0x0C's 0x0100)."""
        bay = self.bay
        return bay.usage.cleaning_due(bay.library.config.cleaning, bay.index)
