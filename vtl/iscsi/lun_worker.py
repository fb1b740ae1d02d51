"""One exported device behind the small interface a connection needs: a lock and a thread.

A connection runs a command on a LUN through exactly these: ``lock`` (one command at a time
reaches the device), ``device`` (the model, vtl/scsi/base.py), the optional hooks ``idle``
and ``data_out_length`` looked up once, and ``post`` (run a long command on the LUN's own
thread, in arrival order). The target creates one per LUN, shared by all sessions; nothing
here knows about connections or the target, which keeps the import graph a tree.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from vtl.scsi.base import ScsiDevice

log = logging.getLogger("vtl.iscsi")


class LunWorker:
    """One device: the lock that lets one command at a time reach it, and the thread that
    runs its long commands in arrival order.

    A bare thread and a SimpleQueue rather than a ThreadPoolExecutor: posting a command
    allocates no Future and takes no executor locks.
    """

    _STOP = object()

    def __init__(self, name: str, device: ScsiDevice) -> None:
        self.device = device
        self.lock = threading.Lock()
        # The optional parts of the device contract (vtl/scsi/base.py), looked up once
        # (``inline_opcodes`` may change with the device's state: read per command).
        self.idle: Callable[[], None] | None = getattr(device, "idle", None)
        self.data_out_length: Callable[[bytes], int | None] | None = getattr(
            device, "data_out_length", None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lun-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # keep the LUN alive whatever one job does
                log.exception("LUN worker job failed")

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` on this LUN's thread (RuntimeError once shut down)."""
        if self._closed:
            raise RuntimeError("LUN worker is shut down")
        self._queue.put((fn, args))

    def shutdown(self) -> None:
        """Run what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
        self._thread.join()
