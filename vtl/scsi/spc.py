"""SPC-4 common command set for any device type: the base class every model subclasses.

``ScsiModel`` owns what SPC-4 defines for all logical units: opcode dispatch with CDB
validation, INQUIRY and VPD pages, REQUEST SENSE, UNIT ATTENTION queues per I_T nexus,
RESERVE/RELEASE(6) and persistent reservations, the MODE and LOG page frameworks, PREVENT
ALLOW MEDIUM REMOVAL and REPORT SUPPORTED OPERATION CODES. A device type (SSC tape drive,
SMC changer) adds its commands by decorating methods with ``@command``:

    class MediumChanger(ScsiModel):
        PERIPHERAL_TYPE = 0x08

        @command(Opcode.MOVE_MEDIUM, "MOVE MEDIUM", "a5 00 ff ff ff ff ff ff ff ff 00 00",
                 pr=PR_WRITE)
        def move_medium(self, req: Request) -> None: ...

The usage string is the CDB usage data of REPORT SUPPORTED OPERATION CODES (opcode, then one
mask byte per CDB byte naming the bits the device looks at). The same mask validates every
incoming CDB: a set bit outside it is a reserved or unsupported field, answered with ILLEGAL
REQUEST 24/00 and a field pointer, so a handler only ever sees CDBs it understands.

``execute`` never raises: CheckCondition becomes sense, anything else becomes HARDWARE ERROR
44/00 and is logged.

Order of checks for every command (SAM-5/SPC-4): first contact of a nexus queues the
power-on (or reset) UNIT ATTENTION; unknown opcode -> 20/00, unknown service action or short
CDB -> 24/00; ``before_command`` hook; a pending UNIT ATTENTION is reported (except INQUIRY,
REPORT LUNS, REQUEST SENSE); RESERVATION CONFLICT from RESERVE(6) or persistent reservations
(by the command's ``pr`` class); reserved bits -> 24/00 with field pointer; the handler.

Hooks and knobs for subclasses (all optional):

- ``@command(..., data_out=...)``: how many Data-Out bytes the CDB asks for, declared with
  the command (``parameter_list_length(offset, width)`` or a function of model and CDB);
  ``data_out_length(cdb)`` answers transports from it.
- ``before_command(nexus, spec)``: notice external changes and ``queue_ua`` before UA check.
- ``queue_ua(ua, exclude=nexus, only=nexus)``: queue a UNIT ATTENTION for seen nexuses.
- ``check_ready(req)`` (TEST UNIT READY), ``idle_sense()`` (REQUEST SENSE with nothing pending).
- ``add_mode_page(ModePage(...))``, ``add_log_page(LogPage(...))``; ``mode_header_fields``,
  ``block_descriptors``, ``select_header``, ``select_block_descriptors`` for the headers.
- ``vpd_pages()`` (extend the dict), ``inquiry_byte6()``, ``device_designators()``;
  transports may append VPD 0x83 descriptors to ``extra_designators``.
- ``on_prevent_changed(prevented)``: union of PREVENT ALLOW MEDIUM REMOVAL over nexuses.
- ``on_reset(kind)``: after a LUN/target reset was applied.
- ``prevent_removal`` (property), ``pending_ua(nexus)``, ``lock`` (held around each command).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vtl.scsi import reservations
from vtl.scsi.base import CheckCondition, Nexus, ResetKind, ScsiResult, Status
from vtl.scsi.identities import DeviceIdentity
from vtl.scsi.opcodes import REPORT_SUPPORTED_OPERATION_CODES, Opcode
from vtl.scsi.pages import (
    PC_CHANGEABLE,
    PC_SAVED,
    LogPage,
    ModePage,
    ascii_field,
)
from vtl.scsi.sense import (
    INTERNAL_TARGET_FAILURE,
    NO_ADDITIONAL_SENSE,
    PARAMETER_LIST_LENGTH_ERROR,
    SAVING_PARAMETERS_NOT_SUPPORTED,
    UnitAttention,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
    invalid_opcode,
)

log = logging.getLogger(__name__)

# Persistent-reservation classes of a command (see vtl.scsi.reservations).
PR_ALLOWED = reservations.ALLOWED  # allowed from any nexus, whatever is reserved
PR_READ = reservations.READ  # conflicts only under Exclusive Access types for non-holders
PR_WRITE = reservations.WRITE  # conflicts under every type for non-holders

# Opcodes whose byte 1 bits 4..0 carry a SERVICE ACTION when registered with ``sa=``.
_SA_MASK = 0x1F
# REQUEST SENSE reads the sense a nexus's last command left; every other GOOD command clears it.
_REQUEST_SENSE = int(Opcode.REQUEST_SENSE)


# How many bytes of Data-Out a CDB asks for, given the model (a tape's fixed block size is
# device state) and the CDB; None when the model cannot tell (fixed mode with no block size).
DataOutLength = Callable[[Any, bytes], "int | None"]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One supported command (opcode + optional service action) and how to run it."""

    opcode: int
    name: str
    usage: bytes  # CDB usage data; its length is the CDB length
    method: str  # handler method name, looked up on the instance so subclasses can override
    sa: int | None = None
    pr: int = PR_READ
    ua_exempt: bool = False  # INQUIRY, REPORT LUNS, REQUEST SENSE
    timeout: int = 0  # recommended timeout in seconds (REPORT SUPPORTED OPCODES with RCTD)
    check: bytes = b""  # validation mask (usage with the SA bits opened)
    inv: int = 0  # the bits NOT in ``check`` (opcode byte excluded), as one big-endian int
    data_out: DataOutLength | None = None  # Data-Out bytes the CDB asks for (None: none)

    @property
    def cdb_len(self) -> int:
        return len(self.usage)


def parameter_list_length(offset: int, width: int) -> DataOutLength:
    """``data_out=`` for the commands whose Data-Out length is a CDB field (the PARAMETER
    LIST LENGTH of MODE SELECT, LOG SELECT, PERSISTENT RESERVE OUT, WRITE ATTRIBUTE)."""
    end = offset + width

    def length(model: Any, cdb: bytes) -> int:
        return int.from_bytes(cdb[offset:end], "big")

    return length


def _parse_usage(usage: str) -> bytes:
    return bytes.fromhex(usage.replace(" ", ""))


def command(
    opcode: int,
    name: str,
    usage: str,
    *,
    sa: int | None = None,
    pr: int = PR_READ,
    ua_exempt: bool = False,
    timeout: int = 0,
    data_out: DataOutLength | None = None,
) -> Callable:
    """Register the decorated method as the handler of ``opcode`` (and service action ``sa``).

    The handler gets a ``Request`` and returns None (GOOD, no data), data bytes (GOOD), or a
    ``ScsiResult``; it raises ``CheckCondition`` for errors. Stack several decorators to make
    one method serve several opcodes or service actions. A command that takes Data-Out
    declares its length here (``data_out=``), as the kernel's CDB parser sets the transfer
    size with the handler; ``data_out_length`` answers transports from it.
    """
    opcode = int(opcode)  # plain int keys: the dispatch table is looked up per command
    raw = _parse_usage(usage)
    if raw[0] != opcode:
        raise ValueError(f"usage data for {name} must start with the opcode")
    check = bytearray(raw)
    if sa is not None:
        check[1] |= _SA_MASK
    # The CONTROL byte's vendor-specific bits are not ours to judge.
    check[-1] |= 0xC0

    check[0] = 0xFF
    inv = ~int.from_bytes(check, "big") & ((1 << (8 * len(check))) - 1)

    def deco(fn: Callable) -> Callable:
        specs = list(getattr(fn, "_scsi_commands", ()))
        specs.append(
            CommandSpec(opcode, name, raw, fn.__name__, sa, pr, ua_exempt, timeout, bytes(check),
                        inv, data_out)
        )
        fn._scsi_commands = specs  # type: ignore[attr-defined]
        return fn

    return deco


def service_actions(
    opcode: int,
    name: str,
    usage: str,
    sas: Iterable[int],
    *,
    pr: int = PR_READ,
    ua_exempt: bool = False,
    timeout: int = 0,
    data_out: DataOutLength | None = None,
) -> Callable:
    """``@command`` once per service action in ``sas``, for one method that serves them all.

    ``usage`` is the usage data with byte 1's service action bits zero; each registration
    gets its own service action filled in there, as REPORT SUPPORTED OPERATION CODES reports
    it, so a list of service actions reads as one line instead of one decorator each.
    """
    raw = _parse_usage(usage)
    decorators = [
        command(opcode, name, bytes((raw[0], raw[1] | sa, *raw[2:])).hex(" "), sa=sa, pr=pr,
                ua_exempt=ua_exempt, timeout=timeout, data_out=data_out)
        for sa in sas
    ]

    def deco(fn: Callable) -> Callable:
        for register in decorators:
            fn = register(fn)
        return fn

    return deco


@dataclass(slots=True)
class Request:
    """One command as a handler sees it."""

    nexus: Nexus
    cdb: bytes
    data_out: bytes | bytearray | memoryview
    spec: CommandSpec

    def u16(self, off: int) -> int:
        return int.from_bytes(self.cdb[off : off + 2], "big")

    def u24(self, off: int) -> int:
        return int.from_bytes(self.cdb[off : off + 3], "big")

    def u32(self, off: int) -> int:
        return int.from_bytes(self.cdb[off : off + 4], "big")

    def u64(self, off: int) -> int:
        return int.from_bytes(self.cdb[off : off + 8], "big")

    def param_list(self, length: int) -> memoryview:
        """The first ``length`` bytes of Data-Out; 1A/00 if the initiator sent fewer."""
        data = self.data_out
        if len(data) < length:
            raise PARAMETER_LIST_LENGTH_ERROR()
        return memoryview(data)[:length]


def trunc(data: bytes | bytearray | memoryview, alloc: int) -> bytes | bytearray | memoryview:
    """Allocation-length truncation (SPC-4 4.2.5.6): never an error, just fewer bytes."""
    return data if len(data) <= alloc else data[:alloc]


def report_luns(luns: Iterable[int], cdb: bytes) -> bytes | bytearray | memoryview:
    """REPORT LUNS parameter data (SPC-4 6.33) for a LUN inventory: the one builder, used by
    the SPC model and by transports that answer REPORT LUNS for every LUN address (the
    iSCSI target does, as the kernel's target core does). CheckCondition on a bad CDB."""
    if cdb[2] not in (0x00, 0x01, 0x02):
        raise invalid_field_in_cdb(2)
    alloc = int.from_bytes(cdb[6:10], "big")
    if alloc < 16:
        raise invalid_field_in_cdb(6)
    body = b""
    if cdb[2] != 0x01:  # 0x01 = well-known LUNs only: we have none
        for lun in sorted(luns):
            # SAM-5 4.7: peripheral addressing below 256, flat space addressing above.
            body += (lun | (0x4000 if lun > 255 else 0)).to_bytes(2, "big") + bytes(6)
    return trunc(len(body).to_bytes(4, "big") + bytes(4) + body, alloc)


def descriptor_sense(fixed: bytes) -> bytes:
    """Convert fixed-format sense to descriptor format (SPC-4 4.5.2), keeping every field."""
    if not fixed:
        return fixed
    key, asc, ascq = fixed[2] & 0x0F, fixed[12], fixed[13]
    descs = bytearray()
    if fixed[0] & 0x80:  # VALID: INFORMATION descriptor
        info = int.from_bytes(fixed[3:7], "big")
        descs += bytes((0x00, 0x0A, 0x80, 0)) + info.to_bytes(8, "big")
    if fixed[15] & 0x80:  # sense-key specific
        descs += bytes((0x02, 0x06, 0, 0)) + fixed[15:18] + b"\x00"
    flags = fixed[2] & 0xE0
    if flags:  # stream commands descriptor (FILEMARK, EOM, ILI)
        descs += bytes((0x04, 0x02, 0, flags))
    resp = 0x72 if (fixed[0] & 0x7F) == 0x70 else 0x73
    return bytes((resp, key, asc, ascq, 0, 0, 0, len(descs))) + bytes(descs)


def _mode_parameter_header(data: memoryview, ten: bool) -> tuple[int, int, int, int]:
    """(header length, medium type, device-specific parameter, block descriptor length) of a
    MODE SELECT parameter list (SPC-4 7.5, mode parameter header); 1A/00 if it is cut short."""
    hlen = 8 if ten else 4
    if len(data) < hlen:
        raise PARAMETER_LIST_LENGTH_ERROR()
    if ten:
        medium, dsp, bdlen = data[2], data[3], int.from_bytes(data[6:8], "big")
    else:
        medium, dsp, bdlen = data[1], data[2], data[3]
    if hlen + bdlen > len(data):
        raise PARAMETER_LIST_LENGTH_ERROR()
    return hlen, medium, dsp, bdlen


def _mode_page_header(data: memoryview, off: int) -> tuple[int, int, int, int]:
    """(page, subpage, page length, header length) of the mode page at ``off``: page_0
    format (2-byte header) or, with SPF set, sub_page format (4 bytes) (SPC-4 7.5)."""
    plen = len(data)
    if off + 2 > plen:
        raise PARAMETER_LIST_LENGTH_ERROR()
    b0 = data[off]
    if not b0 & 0x40:
        return b0 & 0x3F, 0, data[off + 1], 2
    if off + 4 > plen:
        raise PARAMETER_LIST_LENGTH_ERROR()
    return b0 & 0x3F, data[off + 1], int.from_bytes(data[off + 2 : off + 4], "big"), 4


class ScsiModel:
    """SPC-4 base of every device model. Subclasses set the class attributes below, add
    commands with ``@command``, pages with ``add_mode_page``/``add_log_page`` and VPD pages by
    overriding ``vpd_pages``."""

    PERIPHERAL_TYPE = 0x1F  # unknown; SSC 0x01, SMC 0x08
    REMOVABLE = True  # RMB bit
    # The block descriptor length a MODE SENSE returns when DBD=0 (0 = no block descriptors).
    _table: dict[int, CommandSpec | dict[int, CommandSpec]] = {}
    _specs: list[CommandSpec] = []
    _data_out: dict[int, tuple[int, DataOutLength]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._build_table()

    @classmethod
    def _build_table(cls) -> None:
        """Collect every ``@command`` method along the MRO into the opcode dispatch table."""
        table: dict[int, CommandSpec | dict[int, CommandSpec]] = {}
        specs: dict[tuple[int, int | None], CommandSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for spec in getattr(attr, "_scsi_commands", ()):
                    specs[(spec.opcode, spec.sa)] = spec
        for spec in specs.values():
            if spec.sa is None:
                table[spec.opcode] = spec
            else:
                sub = table.setdefault(spec.opcode, {})
                if isinstance(sub, CommandSpec):
                    raise TypeError(f"opcode {spec.opcode:#x} registered with and without SA")
                sub[spec.sa] = spec
        cls._table = table
        cls._specs = sorted(specs.values(), key=lambda s: (s.opcode, s.sa or 0))
        # Data-Out lengths by opcode alone: every service action of an opcode declares the
        # same one, and an unknown service action still tells a transport what to expect.
        cls._data_out = {s.opcode: (s.cdb_len, s.data_out) for s in cls._specs if s.data_out}

    def __init__(self, identity: DeviceIdentity, serial: str) -> None:
        self.identity = identity
        self.serial = serial
        self.luns: list[int] = [0]  # what REPORT LUNS answers if the transport asks us
        # VPD 0x83 descriptors a transport adds (target port name, relative port...).
        self.extra_designators: list[bytes] = []
        self.lock = threading.RLock()
        self.mode_pages: dict[tuple[int, int], ModePage] = {}
        self.log_pages: dict[tuple[int, int], LogPage] = {}
        # Unit attention state per I_T nexus.
        self._seen: set[Nexus] = set()
        self._ua: dict[Nexus, set[UnitAttention]] = {}
        self._first_ua = UnitAttention.POWER_ON_RESET
        self._last_nexus: Nexus | None = None  # fast path: same nexus as the last command
        self._sense: dict[Nexus, bytes] = {}
        # RESERVE(6) holder.
        self._reserve6: Nexus | None = None
        # Persistent reservations (registrations by I_T nexus).
        self.pr = reservations.PersistentReservations(
            lambda ua, nexus: self.queue_ua(ua, only=nexus))
        # PREVENT ALLOW MEDIUM REMOVAL per nexus.
        self._prevent: set[Nexus] = set()
        self.add_log_page(LogPage(0x00, self._supported_log_params, name="supported pages"))

    @property
    def descriptor_sense(self) -> bool:
        """Control mode page 0x0A D_SENSE: autosense in descriptor format (if the page exists)."""
        page = self.mode_pages.get((0x0A, 0))
        return page is not None and bool(page.current[0] & 0x04)

    # ------------------------------------------------------------------ registry helpers
    def add_mode_page(self, page: ModePage) -> ModePage:
        self.mode_pages[page.key] = page
        return page

    def add_log_page(self, page: LogPage) -> LogPage:
        self.log_pages[page.key] = page
        return page

    def mode_page(self, page: int, subpage: int = 0) -> ModePage:
        return self.mode_pages[(page, subpage)]

    # ------------------------------------------------------------------ execution
    def execute(
        self, nexus: Nexus, cdb: bytes, data_out: bytes | bytearray | memoryview | None = None
    ) -> ScsiResult:
        """Run one command to completion; never raises (see module docstring)."""
        with self.lock:
            try:
                result = self._execute(nexus, cdb, data_out if data_out is not None else b"")
            except CheckCondition as cc:
                result = cc.result()
            except Exception:  # a model bug must not kill the transport
                log.exception("internal error executing CDB %s", bytes(cdb[:16]).hex())
                result = INTERNAL_TARGET_FAILURE.result()
            if result.status == Status.CHECK_CONDITION:
                self._sense[nexus] = result.sense
                if self.descriptor_sense:
                    result.sense = descriptor_sense(result.sense)
            elif self._sense and cdb and cdb[0] != _REQUEST_SENSE:
                self._sense.pop(nexus, None)
            return result

    def _execute(
        self, nexus: Nexus, cdb: bytes, data_out: bytes | bytearray | memoryview
    ) -> ScsiResult:
        if nexus is not self._last_nexus:
            if nexus not in self._seen:
                self._seen.add(nexus)
                self._ua.setdefault(nexus, set()).add(self._first_ua)
            self._last_nexus = nexus
        entry = self._table.get(cdb[0]) if cdb else None
        # Most opcodes have no service actions: their entry is the command itself.
        spec = entry if type(entry) is CommandSpec else self._command_for(cdb)
        n = len(spec.usage)
        if len(cdb) != n or type(cdb) is not bytes:
            if len(cdb) < n:
                raise invalid_field_in_cdb(len(cdb))
            cdb = bytes(cdb[:n])
        self.before_command(nexus, spec)
        if self._ua and not spec.ua_exempt:
            pending = self._ua.get(nexus)
            if pending:
                ua = self._pop_ua(pending)
                if not pending:
                    del self._ua[nexus]
                raise ua.condition()
        if (
            spec.pr != PR_ALLOWED
            and (self._reserve6 is not None or self.pr.reservation is not None)
            and self._conflicts(nexus, spec.pr)
        ):
            return ScsiResult(Status.RESERVATION_CONFLICT)
        if int.from_bytes(cdb, "big") & spec.inv:
            check = spec.check
            for i in range(1, n):
                bad = cdb[i] & ~check[i] & 0xFF
                if bad:
                    raise invalid_field_in_cdb(i, bad.bit_length() - 1)
        out = getattr(self, spec.method)(Request(nexus, cdb, data_out, spec))
        if out is None:
            return ScsiResult()
        if isinstance(out, ScsiResult):
            return out
        return ScsiResult(Status.GOOD, out)

    def _command_for(self, cdb: bytes) -> CommandSpec:
        """The ``@command`` entry ``cdb`` names: by opcode, and by service action where the
        opcode has them. 20/00 for an unknown opcode, 24/00 (byte 1) for an unknown service
        action, with the field pointer."""
        entry = self._table.get(cdb[0]) if cdb else None
        if entry is None:
            raise invalid_opcode()
        if not isinstance(entry, dict):
            return entry
        if len(cdb) < 2:
            raise invalid_field_in_cdb(0)
        spec = entry.get(cdb[1] & _SA_MASK)
        if spec is None:
            raise invalid_field_in_cdb(1, 4)
        return spec

    def _plain_nexus(self, nexus: Nexus, pr_class: int) -> bool:
        """Would a command of reservation class ``pr_class`` from ``nexus`` pass the general
        path's checks untouched: the nexus spoke last (no first-contact UA), has no UA
        pending and meets no reservation conflict? A fast path that bypasses ``execute`` asks
        this first (under ``self.lock``), so it never differs from the general path; after
        success it calls ``_plain_done``."""
        if nexus is not self._last_nexus:
            return False
        ua = self._ua
        if ua and ua.get(nexus):
            return False
        if self._reserve6 is not None or self.pr.reservation is not None:
            return not self._conflicts(nexus, pr_class)
        return True

    def _plain_done(self, nexus: Nexus) -> None:
        """What ``execute`` does after a command answered GOOD: the nexus's sense is gone."""
        if self._sense:
            self._sense.pop(nexus, None)

    def data_out_length(self, cdb: bytes) -> int | None:
        """Bytes of Data-Out the CDB asks for, as its ``@command`` declares (``data_out=``),
        or None for "no opinion": a command without Data-Out, or a CDB too short for its
        opcode (optional transport hook: the iSCSI target compares it with the Expected Data
        Transfer Length to set write residuals, and refuses a short burst before a tape
        block could be torn)."""
        entry = self._data_out.get(cdb[0]) if cdb else None
        if entry is None or len(cdb) < entry[0]:
            return None
        return entry[1](self, cdb)

    def before_command(self, nexus: Nexus, spec: CommandSpec) -> None:
        """Hook run before UA/reservation checks (e.g. notice a media change, queue a UA)."""

    # ------------------------------------------------------------------ unit attention
    @staticmethod
    def _pop_ua(pending: set[UnitAttention]) -> UnitAttention:
        for ua in UnitAttention:  # enum order is priority order
            if ua in pending:
                pending.discard(ua)
                return ua
        raise AssertionError("empty UA set")

    def queue_ua(self, ua: UnitAttention, *, exclude: Nexus | None = None,
                 only: Nexus | None = None) -> None:
        """Queue ``ua`` for every nexus seen so far (or just ``only``), except ``exclude``.

        Nexuses that have not talked to us yet get the power-on/reset UA at first contact,
        which already tells them to re-check everything.
        """
        targets = [only] if only is not None else list(self._seen)
        for nx in targets:
            if nx != exclude:
                self._ua.setdefault(nx, set()).add(ua)

    def pending_ua(self, nexus: Nexus) -> set[UnitAttention]:
        return set(self._ua.get(nexus, ()))

    def reset(self, kind: ResetKind, nexus: Nexus | None = None) -> None:
        """LUN/target reset: UA 29/03 to every nexus, drop RESERVE(6) and PREVENT; PRs stay."""
        with self.lock:
            if kind == ResetKind.ABORT_TASK_SET:
                return  # commands run to completion one at a time; nothing queued to abort
            self._seen.clear()
            self._last_nexus = None
            self._ua.clear()
            self._sense.clear()
            self._first_ua = UnitAttention.BUS_DEVICE_RESET
            self._reserve6 = None
            if self._prevent:
                self._prevent.clear()
                self.on_prevent_changed(False)
            # SPC-4: after a logical unit reset the current mode values are the saved ones
            # (or the defaults for pages that are not savable).
            for page in self.mode_pages.values():
                page.apply(page.saved if page.savable else page.default)
            self.on_reset(kind)

    def on_reset(self, kind: ResetKind) -> None:
        """Hook for subclasses (e.g. a drive drops buffered state)."""

    def nexus_lost(self, nexus: Nexus) -> None:
        """I_T nexus loss: drop its RESERVE(6), PREVENT and sense; its PR registration stays."""
        with self.lock:
            if self._reserve6 == nexus:
                self._reserve6 = None
            if nexus in self._prevent:
                self._prevent.discard(nexus)
                if not self._prevent:
                    self.on_prevent_changed(False)
            self._sense.pop(nexus, None)
            self._seen.discard(nexus)
            self._last_nexus = None
            self._ua.pop(nexus, None)

    # ------------------------------------------------------------------ reservations
    def _conflicts(self, nexus: Nexus, cls: int) -> bool:
        if self._reserve6 is not None and self._reserve6 != nexus:
            return True
        return self.pr.conflicts(nexus, cls)

    # ------------------------------------------------------------------ identity pieces
    @property
    def prevent_removal(self) -> bool:
        return bool(self._prevent)

    def on_prevent_changed(self, prevented: bool) -> None:
        """Hook: the union of all nexuses' PREVENT state changed (drive sets bay flag)."""

    def peripheral(self) -> int:
        """Byte 0 of INQUIRY/VPD: qualifier 0 (connected) and the device type."""
        return self.PERIPHERAL_TYPE & 0x1F

    def naa_designator(self) -> bytes:
        """NAA 5 (IEEE registered): the vendor's OUI + 36 bits derived from the serial."""
        h = int.from_bytes(hashlib.sha1(f"{self.identity.product}:{self.serial}".encode()).digest()[:5], "big")
        value = (0x5 << 60) | ((self.identity.ieee_oui & 0xFFFFFF) << 36) | (h & ((1 << 36) - 1))
        return value.to_bytes(8, "big")

    def standard_inquiry(self) -> bytes:
        ident = self.identity
        d = bytearray(96)
        d[0] = self.peripheral()
        d[1] = 0x80 if self.REMOVABLE else 0x00
        d[2] = 0x06  # SPC-4
        d[3] = 0x12  # HISUP, response data format 2
        d[4] = len(d) - 5
        d[6] = self.inquiry_byte6()
        d[7] = 0x02  # CMDQUE
        d[8:16] = ascii_field(ident.vendor, 8)
        d[16:32] = ascii_field(ident.product, 16)
        d[32:36] = ascii_field(ident.revision, 4)
        d[36:56] = ascii_field(self.serial, 20)  # vendor specific: IBM puts the serial here
        for i, vd in enumerate(ident.version_descriptors[:8]):
            d[58 + 2 * i : 60 + 2 * i] = vd.to_bytes(2, "big")
        return bytes(d)

    def inquiry_byte6(self) -> int:
        """Byte 6 flags (MULTIP, MCHNGR...); subclasses may set MCHNGR etc."""
        return 0x00

    def vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        """VPD page code -> body builder (the bytes after the 4-byte page header).

        Subclasses extend: ``pages = super().vpd_pages(); pages[0xB0] = self._vpd_b0``.
        """
        return {0x00: self._vpd_supported, 0x80: self._vpd_serial, 0x83: self._vpd_devid}

    def _vpd_supported(self) -> bytes:
        return bytes(sorted(self.vpd_pages()))

    def _vpd_serial(self) -> bytes:
        return self.serial.encode("ascii", "replace")

    def device_designators(self) -> list[bytes]:
        """Designation descriptors of VPD 0x83; a transport may append its own (target port)."""
        ident = self.identity
        t10 = ascii_field(ident.vendor, 8) + ascii_field(ident.product, 16) + \
            self.serial.encode("ascii", "replace")
        naa = self.naa_designator()
        return [
            bytes((0x02, 0x01, 0x00, len(t10))) + t10,  # ASCII, LU, T10 vendor ID
            bytes((0x01, 0x03, 0x00, len(naa))) + naa,  # binary, LU, NAA
            *self.extra_designators,
        ]

    def _vpd_devid(self) -> bytes:
        return b"".join(self.device_designators())

    # ------------------------------------------------------------------ SPC commands
    @command(Opcode.INQUIRY, "INQUIRY", "12 01 ff ff ff 00", pr=PR_ALLOWED, ua_exempt=True)
    def cmd_inquiry(self, req: Request) -> bytes:
        cdb = req.cdb
        alloc = req.u16(3)
        if not cdb[1] & 0x01:
            if cdb[2]:
                raise invalid_field_in_cdb(2)
            return trunc(self.standard_inquiry(), alloc)
        builder = self.vpd_pages().get(cdb[2])
        if builder is None:
            raise invalid_field_in_cdb(2)
        body = builder()
        page = bytes((self.peripheral(), cdb[2])) + len(body).to_bytes(2, "big") + body
        return trunc(page, alloc)

    @command(Opcode.TEST_UNIT_READY, "TEST UNIT READY", "00 00 00 00 00 00", pr=PR_ALLOWED)
    def cmd_test_unit_ready(self, req: Request) -> None:
        self.check_ready(req)

    def check_ready(self, req: Request) -> None:
        """Hook: raise NOT READY when the unit cannot do medium access."""

    @command(Opcode.REQUEST_SENSE, "REQUEST SENSE", "03 01 00 00 ff 00", pr=PR_ALLOWED,
             ua_exempt=True)
    def cmd_request_sense(self, req: Request) -> bytes:
        nexus = req.nexus
        pending = self._ua.get(nexus)
        if pending:
            sense = self._pop_ua(pending).condition().sense()
            if not pending:
                del self._ua[nexus]
        else:
            sense = self._sense.pop(nexus, None) or self.idle_sense()
        if req.cdb[1] & 0x01:
            sense = descriptor_sense(sense)
        return trunc(sense, req.cdb[4])

    def idle_sense(self) -> bytes:
        """Sense for REQUEST SENSE with nothing pending (SSC: not-ready state, EOM...)."""
        return NO_ADDITIONAL_SENSE.sense()

    @command(Opcode.REPORT_LUNS, "REPORT LUNS", "a0 00 ff 00 00 00 ff ff ff ff 00 00",
             pr=PR_ALLOWED, ua_exempt=True)
    def cmd_report_luns(self, req: Request) -> bytes:
        return report_luns(self.luns, req.cdb)

    # -- MODE SENSE / MODE SELECT -----------------------------------------------------------
    def mode_header_fields(self) -> tuple[int, int]:
        """(medium type, device-specific parameter) of the mode parameter header."""
        return 0, 0

    def block_descriptors(self, pc: int, long_lba: bool) -> bytes:
        """Block descriptor bytes for MODE SENSE (none by default)."""
        return b""

    def select_header(self, medium_type: int, device_specific: int, offset: int) -> bool:
        """MODE SELECT header fields; returns whether something changed. Default: ignore."""
        return False

    def select_block_descriptors(self, data: memoryview, offset: int) -> bool:
        """MODE SELECT block descriptors; returns whether something changed."""
        if len(data):
            raise invalid_field_in_parameter_list(offset)
        return False

    def _pages_for(self, page: int, subpage: int) -> list[ModePage]:
        if page == 0x3F:
            if subpage == 0x00:
                pages = [p for p in self.mode_pages.values() if p.subpage == 0]
            elif subpage == 0xFF:
                pages = list(self.mode_pages.values())
            else:
                raise invalid_field_in_cdb(3)
            return sorted(pages, key=lambda p: p.key)
        if subpage == 0xFF:
            pages = [p for p in self.mode_pages.values() if p.page == page]
            if not pages:
                raise invalid_field_in_cdb(2, 5)
            return sorted(pages, key=lambda p: p.key)
        p = self.mode_pages.get((page, subpage))
        if p is None and page == 0 and subpage == 0:
            return []  # page 0: header and block descriptors only (Linux st at open)
        if p is None:
            raise invalid_field_in_cdb(2 if subpage == 0 else 3, 5 if subpage == 0 else None)
        return [p]

    def _mode_sense(self, req: Request, ten: bool) -> bytes:
        cdb = req.cdb
        dbd = bool(cdb[1] & 0x08)
        llbaa = ten and bool(cdb[1] & 0x10)
        pc = cdb[2] >> 6
        page, subpage = cdb[2] & 0x3F, cdb[3]
        alloc = req.u16(7) if ten else cdb[4]
        if pc == PC_SAVED and not any(p.savable for p in self.mode_pages.values()):
            raise SAVING_PARAMETERS_NOT_SUPPORTED(field_pointer=2, bit=7)
        pages = self._pages_for(page, subpage)
        body = b"".join(p.encode(pc) for p in pages)
        bd = b"" if dbd else self.block_descriptors(pc, llbaa)
        medium, dsp = self.mode_header_fields()
        if pc == PC_CHANGEABLE:
            medium, dsp = 0, self.changeable_device_specific()
        if ten:
            total = 8 + len(bd) + len(body)
            hdr = (total - 2).to_bytes(2, "big") + bytes((medium, dsp, 0x01 if llbaa and len(bd) == 16 else 0, 0)) + len(bd).to_bytes(2, "big")
        else:
            total = 4 + len(bd) + len(body)
            hdr = bytes((min(total - 1, 255), medium, dsp, len(bd)))
        return trunc(hdr + bd + body, alloc)

    def changeable_device_specific(self) -> int:
        return 0

    @command(Opcode.MODE_SENSE_6, "MODE SENSE(6)", "1a 08 ff ff ff 00", pr=PR_READ)
    def cmd_mode_sense6(self, req: Request) -> bytes:
        return self._mode_sense(req, ten=False)

    @command(Opcode.MODE_SENSE_10, "MODE SENSE(10)", "5a 18 ff ff 00 00 00 ff ff 00", pr=PR_READ)
    def cmd_mode_sense10(self, req: Request) -> bytes:
        return self._mode_sense(req, ten=True)

    def _mode_select(self, req: Request, ten: bool) -> None:
        """MODE SELECT(6)/(10): header, block descriptors and pages, all or nothing."""
        save = bool(req.cdb[1] & 0x01)  # SP: save pages
        plen = req.u16(7) if ten else req.cdb[4]
        if plen == 0:
            return
        if save and not any(p.savable for p in self.mode_pages.values()):
            raise invalid_field_in_cdb(1, 0)
        data = req.param_list(plen)
        hlen, medium, dsp, bdlen = _mode_parameter_header(data, ten)
        staged = self._stage_mode_pages(data, hlen + bdlen, save)
        changed = self.select_header(medium, dsp, 1 if not ten else 2)
        changed |= self.select_block_descriptors(data[hlen : hlen + bdlen], hlen)
        for mp, body in staged:
            changed |= mp.apply(body, save)
        if changed:
            self.queue_ua(UnitAttention.MODE_PARAMETERS_CHANGED, exclude=req.nexus)

    def _stage_mode_pages(self, data: memoryview, off: int, save: bool
                          ) -> list[tuple[ModePage, memoryview]]:
        """Every mode page from ``off`` to the end of the list, each checked against what
        may change, before any is applied (SPC-4 7.5: the whole list or nothing)."""
        staged: list[tuple[ModePage, memoryview]] = []
        plen = len(data)
        while off < plen:
            page, subpage, length, hdr = _mode_page_header(data, off)
            mp = self.mode_pages.get((page, subpage))
            if mp is None:
                raise invalid_field_in_parameter_list(off, 5)
            if off + hdr + length > plen:
                raise PARAMETER_LIST_LENGTH_ERROR()
            body = data[off + hdr : off + hdr + length]
            mp.check(body, off + hdr)
            if save and not mp.savable:
                raise invalid_field_in_cdb(1, 0)
            staged.append((mp, body))
            off += hdr + length
        return staged

    @command(Opcode.MODE_SELECT_6, "MODE SELECT(6)", "15 11 00 00 ff 00", pr=PR_WRITE,
             data_out=parameter_list_length(4, 1))
    def cmd_mode_select6(self, req: Request) -> None:
        self._mode_select(req, ten=False)

    @command(Opcode.MODE_SELECT_10, "MODE SELECT(10)", "55 11 00 00 00 00 00 ff ff 00",
             pr=PR_WRITE, data_out=parameter_list_length(7, 2))
    def cmd_mode_select10(self, req: Request) -> None:
        self._mode_select(req, ten=True)

    # -- LOG SENSE / LOG SELECT ---------------------------------------------------------------
    def _supported_log_params(self):
        # Page 0x00 is special: its "parameters" are the page codes; encoded by cmd_log_sense.
        return []

    def _supported_log_pages(self, with_subpages: bool) -> bytes:
        keys = sorted(self.log_pages)
        if with_subpages:
            return b"".join(bytes((p, s)) for p, s in keys) + bytes((0x00, 0xFF))
        return bytes(sorted({p for p, s in keys if s == 0}))

    @command(Opcode.LOG_SENSE, "LOG SENSE", "4d 00 ff ff 00 ff ff ff ff 00", pr=PR_ALLOWED)
    def cmd_log_sense(self, req: Request) -> bytes:
        cdb = req.cdb
        pc = cdb[2] >> 6
        page, subpage = cdb[2] & 0x3F, cdb[3]
        pointer = req.u16(5)
        alloc = req.u16(7)
        if page == 0x00 and subpage in (0x00, 0xFF):
            if pointer:
                raise invalid_field_in_cdb(5)
            body = self._supported_log_pages(subpage == 0xFF)
            b0 = 0x40 if subpage == 0xFF else 0x00
            return trunc(bytes((b0, subpage)) + len(body).to_bytes(2, "big") + body, alloc)
        lp = self.log_pages.get((page, subpage))
        if lp is None:
            raise invalid_field_in_cdb(2 if subpage == 0 else 3, 5 if subpage == 0 else None)
        if pointer > lp.max_code():
            raise invalid_field_in_cdb(5)
        data = lp.encode(pc, pointer)
        if pc in (0, 1):
            lp.after_read()
        return trunc(data, alloc)

    @command(Opcode.LOG_SELECT, "LOG SELECT", "4c 03 ff ff 00 00 00 ff ff 00", pr=PR_WRITE,
             data_out=parameter_list_length(7, 2))
    def cmd_log_select(self, req: Request) -> None:
        cdb = req.cdb
        if cdb[1] & 0x01:
            raise invalid_field_in_cdb(1, 0)  # SP: log parameters are not savable
        pcr = bool(cdb[1] & 0x02)
        page, subpage = cdb[2] & 0x3F, cdb[3]
        plen = req.u16(7)
        if pcr or plen == 0:
            if pcr and plen:
                raise invalid_field_in_cdb(7)
            targets = [lp for lp in self.log_pages.values()
                       if page == 0 or lp.key == (page, subpage)]
            if page and not targets:
                raise invalid_field_in_cdb(2, 5)
            for lp in targets:
                lp.reset()
            return
        data = req.param_list(plen)
        off = 0
        while off < plen:
            if off + 4 > plen:
                raise PARAMETER_LIST_LENGTH_ERROR()
            key = (data[off] & 0x3F, data[off + 1] if data[off] & 0x40 else 0)
            length = int.from_bytes(data[off + 2 : off + 4], "big")
            if off + 4 + length > plen:
                raise PARAMETER_LIST_LENGTH_ERROR()
            lp = self.log_pages.get(key)
            if lp is None or key[0] == 0:
                raise invalid_field_in_parameter_list(off, 5)
            lp.select(data[off + 4 : off + 4 + length], off + 4)
            off += 4 + length

    # -- RESERVE(6) / RELEASE(6) --------------------------------------------------------------
    @command(Opcode.RESERVE_6, "RESERVE(6)", "16 00 00 00 00 00", pr=PR_WRITE)
    def cmd_reserve6(self, req: Request) -> ScsiResult | None:
        if self.pr.active:
            return ScsiResult(Status.RESERVATION_CONFLICT)
        self._reserve6 = req.nexus
        return None

    @command(Opcode.RELEASE_6, "RELEASE(6)", "17 00 00 00 00 00", pr=PR_ALLOWED)
    def cmd_release6(self, req: Request) -> ScsiResult | None:
        if self.pr.reservation is not None:
            return ScsiResult(Status.RESERVATION_CONFLICT)
        if self._reserve6 == req.nexus:
            self._reserve6 = None
        return None

    # -- PERSISTENT RESERVE IN / OUT (rules in vtl.scsi.reservations) ----------------------
    @service_actions(Opcode.PERSISTENT_RESERVE_IN, "PERSISTENT RESERVE IN",
                     "5e 00 00 00 00 00 00 ff ff 00", range(4), pr=PR_ALLOWED)
    def cmd_pr_in(self, req: Request) -> bytes:
        sa = req.cdb[1] & _SA_MASK
        pr = self.pr
        if sa == 0:
            data = pr.read_keys()
        elif sa == 1:
            data = pr.read_reservation()
        elif sa == 2:
            data = pr.capabilities()
        else:
            data = pr.full_status()
        return trunc(data, req.u16(7))

    @staticmethod
    def _pr_out_params(req: Request) -> tuple[int, int]:
        """(reservation key, service action reservation key) from the 24-byte list."""
        if req.u32(5) != 24:
            raise PARAMETER_LIST_LENGTH_ERROR()
        data = req.param_list(24)
        flags = data[20]
        if flags & 0x08:  # SPEC_I_PT not supported
            raise invalid_field_in_parameter_list(20, 3)
        if flags & 0x01:  # APTPL: we do not persist through power loss
            raise invalid_field_in_parameter_list(20, 0)
        return int.from_bytes(data[0:8], "big"), int.from_bytes(data[8:16], "big")

    @staticmethod
    def _pr_type(req: Request) -> tuple[int, int]:
        scope, typ = req.cdb[2] >> 4, req.cdb[2] & 0x0F
        if scope != 0:
            raise invalid_field_in_cdb(2, 7)
        if typ not in reservations.TYPES:
            raise invalid_field_in_cdb(2, 3)
        return scope, typ

    @service_actions(Opcode.PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT",
                     "5f 00 ff 00 00 ff ff ff ff 00", range(7),
                     pr=PR_ALLOWED, data_out=parameter_list_length(5, 4))
    def cmd_pr_out(self, req: Request) -> ScsiResult | None:
        sa = req.cdb[1] & _SA_MASK
        key, sa_key = self._pr_out_params(req)
        nexus, pr = req.nexus, self.pr
        if sa in (0, 6):  # REGISTER, REGISTER AND IGNORE EXISTING KEY
            ok = pr.register(nexus, key, sa_key, ignore_existing=sa == 6)
        elif sa == 1:  # RESERVE (a RESERVE(6) held elsewhere conflicts too)
            ok = self._reserve6 in (None, nexus) and pr.reserve(nexus, key, *self._pr_type(req))
        elif sa == 2:  # RELEASE: type and scope are compared, not validated
            ok = pr.release(nexus, key, req.cdb[2] >> 4, req.cdb[2] & 0x0F)
        elif sa == 3:
            ok = pr.clear(nexus, key)
        else:  # PREEMPT, PREEMPT AND ABORT
            ok = pr.preempt(nexus, key, sa_key, *self._pr_type(req))
        return None if ok else ScsiResult(Status.RESERVATION_CONFLICT)

    # -- PREVENT ALLOW MEDIUM REMOVAL -----------------------------------------------------------
    @command(Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, "PREVENT ALLOW MEDIUM REMOVAL",
             "1e 00 00 00 03 00", pr=PR_WRITE)
    def cmd_prevent_allow(self, req: Request) -> None:
        before = bool(self._prevent)
        prevent = req.cdb[4] & 0x03
        if prevent == 0x01:
            self._prevent.add(req.nexus)
        elif prevent == 0x00:
            self._prevent.discard(req.nexus)
        else:
            raise invalid_field_in_cdb(4, 1)  # changer-only (SMC) values
        after = bool(self._prevent)
        if after != before:
            self.on_prevent_changed(after)

    # -- REPORT SUPPORTED OPERATION CODES -----------------------------------------------------
    def _timeouts(self, spec: CommandSpec) -> bytes:
        t = spec.timeout or 60
        return (10).to_bytes(2, "big") + bytes(2) + t.to_bytes(4, "big") + t.to_bytes(4, "big")

    def _usage_of(self, spec: CommandSpec) -> bytes:
        return spec.usage

    @command(Opcode.MAINTENANCE_IN, "REPORT SUPPORTED OPERATION CODES",
             "a3 0c 87 ff ff ff ff ff ff ff 00 00",
             sa=REPORT_SUPPORTED_OPERATION_CODES, pr=PR_ALLOWED)
    def cmd_report_opcodes(self, req: Request) -> bytes:
        cdb = req.cdb
        rctd = bool(cdb[2] & 0x80)  # return command timeouts descriptors
        opts = cdb[2] & 0x07  # REPORTING OPTIONS
        alloc = req.u32(6)
        if opts == 0:
            return trunc(self._all_commands(rctd), alloc)
        spec = self._one_command(opts, cdb[3], req.u16(4))
        if spec is None:
            return trunc(bytes((0, 0x01, 0, 0)), alloc)  # SUPPORT = 001b: not supported
        usage = self._usage_of(spec)
        out = bytes((0, (0x80 if rctd else 0) | 0x03)) + len(usage).to_bytes(2, "big") + usage
        if rctd:
            out += self._timeouts(spec)
        return trunc(out, alloc)

    def _all_commands(self, rctd: bool) -> bytes:
        """REPORTING OPTIONS 000b: one command descriptor per opcode and service action."""
        out = bytearray(4)
        for spec in self._specs:
            out += bytes((spec.opcode, 0)) + (spec.sa or 0).to_bytes(2, "big")
            out += bytes((0, (0x02 if rctd else 0) | (0x01 if spec.sa is not None else 0)))
            out += spec.cdb_len.to_bytes(2, "big")
            if rctd:
                out += self._timeouts(spec)
        out[0:4] = (len(out) - 4).to_bytes(4, "big")
        return bytes(out)

    def _one_command(self, opts: int, opcode: int, want_sa: int) -> CommandSpec | None:
        """The command REPORTING OPTIONS 001b-011b ask about (None: not supported). 001b
        names an opcode without service actions, 010b one with; asking the wrong way for
        an opcode we have is an invalid field, as is any other option."""
        if opts not in (1, 2, 3):
            raise invalid_field_in_cdb(2, 2)
        entry = self._table.get(opcode)
        if entry is None:
            return None
        if isinstance(entry, dict):
            if opts == 1:
                raise invalid_field_in_cdb(2, 2)
            return entry.get(want_sa)
        if opts == 2:
            raise invalid_field_in_cdb(2, 2)
        return None if opts == 3 and want_sa else entry

ScsiModel._build_table()
