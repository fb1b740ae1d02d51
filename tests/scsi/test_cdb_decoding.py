"""SSC CDB decoding (vtl.scsi.ssc_cdb) and the Data-Out lengths commands declare."""

from __future__ import annotations

import pytest

from vtl.scsi.base import CheckCondition
from vtl.scsi.opcodes import Opcode
from vtl.scsi.ssc import TapeDrive
from vtl.scsi.ssc_cdb import (
    DEST_FILEMARK,
    decode_load_unload,
    decode_locate10,
    decode_locate16,
    decode_read_position,
    decode_read_write6,
    decode_security_protocol,
    decode_space6,
    decode_space16,
    decode_write_filemarks,
    immediate,
    streaming_fixed_count,
    streaming_read_length,
    streaming_write_length,
    verify_as_read6,
)


def field_pointer(cc: CheckCondition) -> tuple[int, int | None]:
    return cc.field_pointer, cc.bit


def test_read_write6_fields():
    assert decode_read_write6(bytes([0x08, 0x02, 0x01, 0x00, 0x00, 0])) == (0, 2, 65536)
    assert decode_read_write6(bytes([0x0A, 0x01, 0x00, 0x00, 0x03, 0])) == (1, 0, 3)
    with pytest.raises(CheckCondition) as e:
        decode_read_write6(bytes([0x08, 0x03, 0, 0, 1, 0]))
    assert field_pointer(e.value) == (1, 1)


@pytest.mark.parametrize("cdb, expected", [
    (bytes([0x08, 0, 0, 1, 0, 0]), 256),
    (bytes([0x08, 2, 0, 1, 0, 0]), 256),  # SILI: still the streaming case
    (bytes([0x08, 1, 0, 1, 0, 0]), None),  # fixed mode
    (bytes([0x08, 0, 0, 1, 0, 4]), None),  # control byte set
    (bytes([0x0A, 0, 0, 1, 0, 0]), None),  # not a READ
])
def test_streaming_read_length(cdb, expected):
    assert streaming_read_length(cdb) == expected
    assert streaming_read_length(memoryview(cdb + bytes(10))) == expected


@pytest.mark.parametrize("cdb, expected", [
    (bytes([0x0A, 0, 0, 0x40, 0, 0]), 16384),
    (bytes([0x0A, 1, 0, 0x40, 0, 0]), None),
    (bytes([0x08, 0, 0, 0x40, 0, 0]), None),
])
def test_streaming_write_length(cdb, expected):
    assert streaming_write_length(cdb) == expected


@pytest.mark.parametrize("cdb, expected", [
    (bytes([0x08, 1, 0, 0, 20, 0]), 20),  # READ(6), fixed: 20 blocks
    (bytes([0x0A, 1, 0, 0, 1, 0]), 1),  # WRITE(6), fixed: one block
    (bytes([0x08, 3, 0, 0, 20, 0]), None),  # FIXED with SILI: the general path refuses it
    (bytes([0x08, 0, 0, 0, 20, 0]), None),  # variable mode
    (bytes([0x0A, 1, 0, 0, 1, 4]), None),  # control byte set
    (bytes([0x13, 1, 0, 0, 1, 0]), None),  # VERIFY(6)
])
def test_streaming_fixed_count(cdb, expected):
    assert streaming_fixed_count(cdb) == expected
    assert streaming_fixed_count(memoryview(cdb + bytes(10))) == expected


def test_verify_reads_like_read6_without_sili():
    assert verify_as_read6(bytes([0x13, 0x01, 0, 0, 2, 0])) == bytes([0x08, 0x01, 0, 0, 2, 0])


def test_positioning_fields():
    assert decode_write_filemarks(bytes([0x10, 1, 0, 0, 5, 0])) == (True, 5)
    assert decode_space6(bytes([0x11, 1, 0xFF, 0xFF, 0xFE, 0])) == (1, -2)
    assert decode_space16(bytes([0x91, 0, 0, 0] + [0xFF] * 8 + [0, 0, 0, 0])) == (0, -1)
    with pytest.raises(CheckCondition) as e:
        decode_space16(bytes([0x91, 0, 0, 0] + [0] * 8 + [0, 1, 0, 0]))
    assert field_pointer(e.value) == (12, None)
    assert decode_locate10(bytes([0x2B, 0, 0, 0, 0, 1, 2, 0, 0, 0])) == (0x102, None)
    assert decode_locate10(bytes([0x2B, 2, 0, 0, 0, 1, 2, 0, 1, 0])) == (0x102, 1)
    assert decode_locate16(bytes([0x92, 0x02, 0, 3] + [0] * 8 + [0] * 4)).partition == 3
    assert decode_locate16(bytes([0x92, 0x08, 0, 0] + [0] * 7 + [3] + [0] * 4)) == (
        DEST_FILEMARK, 3, None)
    assert decode_read_position(bytes([0x34, 6, 0, 0, 0, 0, 0, 0, 32, 0])) == (6, 32)
    assert decode_load_unload(bytes([0x1B, 0, 0, 0, 1, 0])).load
    with pytest.raises(CheckCondition) as e:
        decode_load_unload(bytes([0x1B, 0, 0, 0, 5, 0]))
    assert field_pointer(e.value) == (4, 2)


def test_every_data_out_command_declares_its_length():
    """The commands that take Data-Out say how much with their @command; the rest none."""
    takes_data = {Opcode.WRITE_6, Opcode.MODE_SELECT_6, Opcode.MODE_SELECT_10,
                  Opcode.LOG_SELECT, Opcode.PERSISTENT_RESERVE_OUT, Opcode.WRITE_ATTRIBUTE,
                  Opcode.SECURITY_PROTOCOL_OUT, Opcode.SEND_DIAGNOSTIC}
    assert set(TapeDrive._data_out) == takes_data


def test_security_protocol_fields():
    cdb = bytes([0xB5, 0x20, 0x00, 0x10, 0, 0, 0, 0, 0, 52, 0, 0])
    assert decode_security_protocol(cdb) == (0x20, 0x0010, 52)
    with pytest.raises(CheckCondition) as e:
        decode_security_protocol(bytes([0xA2, 0x20, 0, 0x20, 0x80, 0, 0, 0, 1, 0, 0, 0]))
    assert field_pointer(e.value) == (4, 7)


def test_immediate_bit_by_command():
    assert immediate(bytes([0x01, 0x01, 0, 0, 0, 0]))  # REWIND
    assert immediate(bytes([0x1B, 0x01, 0, 0, 1, 0]))  # LOAD UNLOAD
    assert not immediate(bytes([0x19, 0x01, 0, 0, 0, 0]))  # ERASE: bit 0 is LONG
    assert immediate(bytes([0x19, 0x02, 0, 0, 0, 0]))
