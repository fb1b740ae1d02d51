"""IMMED on tape commands: status at once, the work on a thread, every nexus still answered.

SSC lets REWIND, LOAD UNLOAD and ERASE with the IMMED bit return status as soon as the CDB is
validated (WRITE FILEMARKS with IMMED needs no thread: it only skips the sync, and only in
buffered mode). The drive validates what it can first (medium present, write protect, WORM,
PREVENT), then hands the rest (syncing, unmounting, cutting the file) to ``ImmediateWork``:
one thread that holds the drive's lock for the whole of it, so the changer cannot take the
cartridge away from under it and no command sees the work half done.

Meanwhile the drive answers every command at once instead of waiting for that lock
(``TapeDrive.execute``): RESERVATION CONFLICT where a reservation says so, BUSY for INQUIRY and
REPORT LUNS, REQUEST SENSE with NOT READY, LOGICAL UNIT NOT READY, OPERATION IN PROGRESS (04/07)
as its data, and that CHECK CONDITION for everything else, as a drive rewinding with IMMED
does. A failure of the work reaches the nexus that asked as a deferred error on its next
command (sense 0x71). This module knows nothing of tapes: the drive says what the work is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vtl.scsi.base import CheckCondition, Nexus
from vtl.scsi.sense import INTERNAL_TARGET_FAILURE

log = logging.getLogger(__name__)


class ImmediateWork:
    """At most one piece of work at a time, run under ``lock`` on a thread of its own."""

    def __init__(self, lock: threading.RLock, name: str) -> None:
        self._lock = lock
        self._name = name
        self._thread: threading.Thread | None = None
        self._failed: tuple[Nexus, CheckCondition] | None = None

    @property
    def running(self) -> bool:
        """Work was started and has not finished (read without the lock: a hint that turns
        false only once the work is over)."""
        return self._thread is not None

    def start(self, nexus: Nexus, work: Callable[[], None]) -> None:
        """Run ``work`` once the command that asks (holding ``lock``) has returned. A
        CheckCondition it raises is kept for ``nexus`` as a deferred error."""
        thread = threading.Thread(target=self._run, args=(nexus, work), daemon=True,
                                  name=f"immed-{self._name}")
        self._thread = thread  # before start: from now on every command hears "in progress"
        thread.start()

    def _run(self, nexus: Nexus, work: Callable[[], None]) -> None:
        with self._lock:
            try:
                work()
            except CheckCondition as cc:
                cc.deferred = True
                self._failed = (nexus, cc)
            except Exception:  # a model bug must not vanish with the thread
                log.exception("%s: immediate work failed", self._name)
                cc = INTERNAL_TARGET_FAILURE()
                cc.deferred = True
                self._failed = (nexus, cc)
            finally:
                self._thread = None

    def failed_for(self, nexus: Nexus) -> bool:
        """A deferred error waits for ``nexus`` (``take_failure`` would return it)."""
        failed = self._failed
        return failed is not None and failed[0] == nexus

    def busy_for(self, nexus: Nexus) -> bool:
        """``running`` or ``failed_for(nexus)``, in one call (the streaming fast paths ask
        it on every command)."""
        if self._thread is not None:
            return True
        failed = self._failed
        return failed is not None and failed[0] == nexus

    def take_failure(self, nexus: Nexus) -> CheckCondition | None:
        """The deferred error the last work left for ``nexus`` (once)."""
        failed = self._failed
        if failed is None or failed[0] != nexus:
            return None
        self._failed = None
        return failed[1]

    def wait(self) -> None:
        """Until the running work (if any) is over."""
        thread = self._thread
        if thread is not None:
            thread.join()
