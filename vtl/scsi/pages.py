"""Mode and log page containers shared by every device model.

A model registers ``ModePage`` and ``LogPage`` objects with ``ScsiModel.add_mode_page`` /
``add_log_page``; the SPC framework in ``spc.py`` does the wire work (headers, page control
values, validation of non-changeable fields, parameter pointers). Pages hold their *current*
values as a bytearray that the model reads directly (e.g. DCE in page 0x0F), so the hot path
never re-parses a page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass

from vtl.scsi.sense import invalid_field_in_parameter_list

# Page control values (MODE SENSE PC field).
PC_CURRENT = 0
PC_CHANGEABLE = 1
PC_DEFAULT = 2
PC_SAVED = 3


class ModePage:
    """One mode page (or subpage): current, default and changeable-mask parameter bytes.

    ``default`` and ``changeable`` are the page *body* (bytes after the 2- or 4-byte page
    header). ``on_change(old, new)`` runs after a MODE SELECT applied new values, so a model
    can react (e.g. switch compression). ``validate(body, offset)`` may be overridden to reject
    values that the changeable mask allows but the device cannot honour; it must raise
    ``invalid_field_in_parameter_list(offset + i)`` for byte ``i`` of the body.
    """

    def __init__(
        self,
        page: int,
        default: bytes,
        changeable: bytes | None = None,
        *,
        subpage: int = 0,
        savable: bool = False,
        on_change: Callable[[bytes, bytes], None] | None = None,
        name: str = "",
    ) -> None:
        if changeable is None:
            changeable = bytes(len(default))
        if len(changeable) != len(default):
            raise ValueError("changeable mask must match the page length")
        self.page = page
        self.subpage = subpage
        self.default = bytes(default)
        self.changeable = bytes(changeable)
        self.current = bytearray(default)
        self.saved = bytearray(default)
        self.savable = savable
        self.on_change = on_change
        self.name = name

    @property
    def key(self) -> tuple[int, int]:
        return (self.page, self.subpage)

    @property
    def spf(self) -> bool:
        return self.subpage != 0

    def header(self, length: int) -> bytes:
        b0 = (self.page & 0x3F) | (0x80 if self.savable else 0) | (0x40 if self.spf else 0)
        if self.spf:
            return bytes((b0, self.subpage)) + length.to_bytes(2, "big")
        return bytes((b0, length))

    def refresh(self) -> None:
        """Hook: update ``current`` from device state before it is reported."""

    def body(self, pc: int) -> bytes:
        if pc == PC_CHANGEABLE:
            return self.changeable
        if pc == PC_DEFAULT:
            return self.default
        if pc == PC_SAVED:
            return bytes(self.saved)
        self.refresh()
        return bytes(self.current)

    def encode(self, pc: int) -> bytes:
        body = self.body(pc)
        return self.header(len(body)) + body

    def check(self, body: bytes | memoryview, offset: int) -> None:
        """Reject changes to non-changeable bits (26/00 pointing at the byte)."""
        if len(body) != len(self.default):
            # The PAGE LENGTH byte is wrong.
            raise invalid_field_in_parameter_list(offset - (3 if self.spf else 1))
        self.refresh()
        cur = self.current
        mask = self.changeable
        for i, b in enumerate(body):
            diff = (b ^ cur[i]) & ~mask[i] & 0xFF
            if diff:
                raise invalid_field_in_parameter_list(offset + i, diff.bit_length() - 1)
        self.validate(body, offset)

    def validate(self, body: bytes | memoryview, offset: int) -> None:
        """Hook for value checks beyond the changeable mask."""

    def apply(self, body: bytes | memoryview, save: bool = False) -> bool:
        """Store new current values; returns whether anything changed."""
        old = bytes(self.current)
        new = bytes(body)
        self.current[:] = new
        if save:
            self.saved[:] = new
        if old != new:
            if self.on_change is not None:
                self.on_change(old, new)
            return True
        return False


@dataclass(slots=True)
class LogParameter:
    """One log parameter: code, control byte (DU/TSD/ETC/TMC/format bits) and value bytes."""

    code: int
    value: bytes
    control: int = 0x00

    def encode(self) -> bytes:
        return (
            self.code.to_bytes(2, "big") + bytes((self.control, len(self.value))) + self.value
        )


def counter(code: int, value: int, size: int = 8, control: int = 0x00) -> LogParameter:
    """A binary counter parameter of ``size`` bytes (saturating, as SPC asks)."""
    value = min(max(value, 0), (1 << (8 * size)) - 1)
    return LogParameter(code, value.to_bytes(size, "big"), control)


class LogPage:
    """One log page. Subclasses (or a ``source`` callable) produce parameters on demand.

    ``after_read`` runs after the page was returned by LOG SENSE (TapeAlert clears its flags
    there); ``reset`` implements LOG SELECT with PCR=1.
    """

    def __init__(
        self,
        page: int,
        source: Callable[[], Iterable[LogParameter]] | None = None,
        *,
        subpage: int = 0,
        name: str = "",
        reset: Callable[[], None] | None = None,
        after_read: Callable[[], None] | None = None,
    ) -> None:
        self.page = page
        self.subpage = subpage
        self.name = name
        self._source = source
        self._reset = reset
        self._after_read = after_read

    @property
    def key(self) -> tuple[int, int]:
        return (self.page, self.subpage)

    def parameters(self) -> list[LogParameter]:
        return list(self._source()) if self._source is not None else []

    def default_parameters(self) -> list[LogParameter]:
        """Default (PC 2/3) values: same parameters with zero values."""
        return [LogParameter(p.code, bytes(len(p.value)), p.control) for p in self.parameters()]

    def encode(self, pc: int, pointer: int = 0) -> bytes:
        params = self.parameters() if pc in (0, 1) else self.default_parameters()
        body = b"".join(p.encode() for p in params if p.code >= pointer)
        b0 = (self.page & 0x3F) | 0x80 | (0x40 if self.subpage else 0)  # DS=1: not savable
        return bytes((b0, self.subpage)) + len(body).to_bytes(2, "big") + body

    def max_code(self) -> int:
        params = self.parameters()
        return max((p.code for p in params), default=-1)

    def reset(self) -> None:
        if self._reset is not None:
            self._reset()

    def after_read(self) -> None:
        if self._after_read is not None:
            self._after_read()

    def select(self, params: bytes | memoryview, offset: int) -> None:
        """LOG SELECT with parameter data: by default no parameter is settable."""
        raise invalid_field_in_parameter_list(offset)


def tapealert_parameters(flags: Set[int]) -> list[LogParameter]:
    """The TapeAlert log page's parameters (0x2E, SSC-4 and SMC-3): flags 1..64, one byte
    each, 1 when raised (binary list, target save disabled as devices report it)."""
    return [LogParameter(i, bytes([1 if i in flags else 0]), 0x03) for i in range(1, 65)]


def ascii_field(text: str, size: int) -> bytes:
    """Left-aligned, space-padded ASCII (INQUIRY and VPD strings)."""
    raw = text.encode("ascii", "replace")[:size]
    return raw + b" " * (size - len(raw))

