"""The TCMU handler: the kernel's LIO target hands us CDBs, the library's SCSI models answer.

One :class:`DeviceRunner` thread per TCMU device (the changer and each drive are one user
backstore each, so one ring each): a long command on one drive (LOAD, LOCATE, ERASE, a
filemark sync) holds only that drive's ring, never the changer's or another drive's, and a
device's commands run one at a time in ring order (per-LUN ordering, as the iSCSI target's
LUN workers keep it). The models are the very ones ``vtl serve`` uses
(:func:`vtl.scsi.devices.build_device_set`), over the same :class:`~vtl.library.Library`,
so catalog, cartridges, claims and unit attentions behave the same whatever carried the CDB.

What the kernel does and the handler therefore does not: REPORT LUNS, and RESERVE/RELEASE
and PERSISTENT RESERVE (target_core_user does not pass them through), so every command
reaches a model on one nexus, ``lio``; unit attentions the models raise go to whichever
initiator sends the next command.

Device events: the kernel announces added/removed/reconfigured devices over its generic
netlink family ``TCM-USER`` and, if a handler once declared it replies
(TCMU_CMD_SET_FEATURES), waits for each reply. We never declare it, and the export creates
every backstore with ``nl_reply_supported=-1`` so the kernel never waits for us even when
tcmu-runner runs beside us; instead the handler rescans sysfs every
:data:`RESCAN_SECONDS` for devices that appeared (an export after the handler started) or
went (an unexport: the UIO read fails and the runner ends).

Restart: the kernel keeps the devices and their rings when a handler dies. A new handler
maps the ring, kicks once (a completion the dead handler wrote but did not announce), and the entries already waiting there (the command the old handler was
running when it died may be half done) are answered without running them, with UNIT
ATTENTION / POWER ON, RESET (29/00) unless they only read state (INQUIRY, TEST UNIT READY,
MODE SENSE ...), which run normally. Nothing acknowledged is lost: the models made it
durable before its status went back. The fresh models then report the power-on unit
attention once, as a drive does after a reset.

Ring full: the kernel queues commands while the command ring or the data area is full and
retries them when a completion frees space; each completion here is followed by a kick.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vtl.library import Library
from vtl.lio.ring import Command, Ring, RingError
from vtl.lio.uio import UioDevice, UioRing, find_devices
from vtl.scsi.base import DonatedBuffer, Nexus, ScsiDevice, Status
from vtl.scsi.devices import CHANGER_LUN, build_device_set, drive_lun
from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import INTERNAL_TARGET_FAILURE, UnitAttention

log = logging.getLogger("vtl.lio")

LIO_NEXUS = Nexus(initiator="lio", transport_id="lio")
RESCAN_SECONDS = 2.0

# Commands found in the ring at start-up that are safe to run although an earlier handler
# may have seen them: they only read state.
READ_ONLY_OPCODES = frozenset(int(op) for op in (
    Opcode.TEST_UNIT_READY, Opcode.REQUEST_SENSE, Opcode.INQUIRY, Opcode.MODE_SENSE_6,
    Opcode.MODE_SENSE_10, Opcode.LOG_SENSE, Opcode.READ_BLOCK_LIMITS, Opcode.READ_POSITION,
    Opcode.REPORT_DENSITY_SUPPORT, Opcode.READ_ELEMENT_STATUS, Opcode.MAINTENANCE_IN,
    Opcode.READ_ATTRIBUTE, Opcode.REPORT_LUNS,
))


def answer(ring: Ring, command: Command, device: ScsiDevice, nexus: Nexus = LIO_NEXUS) -> None:
    """Run one command through its model and write the response into the ring.

    The direction of the data comes from the model (``data_out_length``: the commands it
    declares Data-Out for), since a TCMU entry does not carry it: Data-Out iovecs are
    gathered into a buffer the model may keep, Data-In bytes are scattered into the iovecs
    and their count reported as ``read_len``.
    """
    data_out = None
    hook: Callable[[bytes], int | None] | None = getattr(device, "data_out_length", None)
    writes = hook is not None and command.cdb and hook(command.cdb) is not None
    if writes and command.iovecs:
        data_out = DonatedBuffer(ring.gather(command))
    try:
        result = device.execute(nexus, command.cdb, data_out)
    except Exception:  # a model bug must not take the ring down: the initiator gets sense
        log.exception("TCMU command %02x failed", command.cdb[0] if command.cdb else -1)
        result = INTERNAL_TARGET_FAILURE.result()
    read_len = None
    if not writes and command.iovecs:
        read_len = ring.scatter(command, result.data) if result.data else 0
    ring.complete(command, int(result.status), result.sense, read_len)


def answer_stale(ring: Ring, command: Command, device: ScsiDevice) -> None:
    """A command an earlier handler may have started: run it only if it reads state."""
    if command.cdb and command.cdb[0] in READ_ONLY_OPCODES:
        answer(ring, command, device)
    else:
        ring.complete(command, int(Status.CHECK_CONDITION),
                      UnitAttention.POWER_ON_RESET.value.sense())


def serve_ring(ring: Ring, device: ScsiDevice, kick: Callable[[], None],
               stale_bytes: int = 0) -> int:
    """Answer every command waiting in ``ring`` (kicking after each), then give back
    trailing PAD/TMR entries. ``stale_bytes``: the first that many bytes of the ring from
    the tail were there before this handler (see the module docstring). Returns the number
    of commands answered."""
    start = ring.tail
    answered = 0
    for command in ring.pending():
        distance = (command.offset - start) % ring.cmdr_size
        if distance < stale_bytes:
            answer_stale(ring, command, device)
        else:
            answer(ring, command, device)
        answered += 1
        kick()
    if ring.skip_to_head():
        kick()
    return answered


class DeviceRunner:
    """One TCMU device served on its own thread until the handler stops or the device goes."""

    def __init__(self, uio: UioDevice, device: ScsiDevice, stop_fd: int,
                 open_ring: Callable[[UioDevice], UioRing] = UioRing) -> None:
        self.uio = uio
        self.device = device
        self._stop_fd = stop_fd
        self._open_ring = open_ring
        self.gone = False
        self.broken = False  # the ring made no sense: left alone until the device goes
        self.thread = threading.Thread(target=self._run, name=f"tcmu-{uio.role}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            port = self._open_ring(self.uio)
        except OSError as e:
            log.error("cannot open /dev/%s (%s): %s", self.uio.uio, self.uio.backstore, e)
            self.gone = True
            return
        try:
            self._serve(port)
        except RingError as e:
            self.broken = True
            log.error("TCMU device %s (%s) left alone: %s", self.uio.backstore, self.uio.uio, e)
        except OSError as e:
            log.warning("TCMU device %s (%s) ended: %s", self.uio.backstore, self.uio.uio, e)
        finally:
            self.gone = True
            port.close()

    def _serve(self, port: UioRing) -> None:
        ring = Ring(port.area)
        # An earlier handler killed between writing a completion (tail moved) and its kick
        # left that command done but unannounced: the kernel looks at the tail only when
        # kicked, so the initiator would wait for it until cmd_time_out. Kick once first.
        port.kick()
        stale = (ring.head - ring.tail) % ring.cmdr_size
        if stale:
            log.info("%s: %d bytes of commands waiting from before this handler",
                     self.uio.backstore, stale)
        idle = getattr(self.device, "idle", None)
        log.info("serving %s (%s) on /dev/%s", self.uio.role, self.uio.backstore, self.uio.uio)
        while True:
            if serve_ring(ring, self.device, port.kick, stale) and idle is not None:
                idle()
            stale = 0
            if not port.wait(self._stop_fd):
                return


class Handler:
    """Every TCMU device of one library, each on its DeviceRunner; rescans for new ones."""

    def __init__(self, library: Library, *, uio_class: Path | None = None,
                 open_ring: Callable[[UioDevice], UioRing] = UioRing) -> None:
        self.library = library
        self.devices = build_device_set(library)
        self.runners: dict[str, DeviceRunner] = {}
        self._uio_class = uio_class
        self._open_ring = open_ring
        self._stop_r, self._stop_w = os.pipe()

    def model_for(self, role: str) -> ScsiDevice | None:
        """The model behind a backstore role (``changer``, ``drive<N>``)."""
        if role == "changer":
            return self.devices.luns.get(CHANGER_LUN)
        if role.startswith("drive") and role[5:].isdigit():
            return self.devices.luns.get(drive_lun(int(role[5:])))
        return None

    def rescan(self) -> list[str]:
        """Start runners for devices that appeared; forget those whose device went."""
        kwargs = {} if self._uio_class is None else {"uio_class": self._uio_class}
        present = find_devices(self.library.root, **kwargs)
        names = {uio.uio for uio in present}
        for name in [n for n, r in self.runners.items()
                     if r.gone and (not r.broken or n not in names)]:
            del self.runners[name]
        started = []
        for uio in present:
            if uio.uio in self.runners:
                continue
            model = self.model_for(uio.role)
            if model is None:
                log.warning("%s: no %s in this library; left alone", uio.backstore, uio.role)
                continue
            runner = DeviceRunner(uio, model, self._stop_r, self._open_ring)
            self.runners[uio.uio] = runner
            runner.start()
            started.append(uio.role)
        return started

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, rescanning every RESCAN_SECONDS."""
        self.rescan()
        while not stop.wait(RESCAN_SECONDS):
            self.rescan()

    def close(self) -> None:
        """Stop every runner (after the command it is running) and close the rings."""
        os.write(self._stop_w, b"x")
        for runner in self.runners.values():
            runner.thread.join(timeout=600)
        os.close(self._stop_r)
        os.close(self._stop_w)
