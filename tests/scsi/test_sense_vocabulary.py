"""The named sense conditions (vtl.scsi.sense): one name per key/ASC/ASCQ, exact bytes."""

from __future__ import annotations

from vtl.scsi import sense
from vtl.scsi.base import SenseKey, Status
from vtl.scsi.sense import Condition, UnitAttention


def conditions() -> dict[str, Condition]:
    return {n: c for n, c in vars(sense).items() if isinstance(c, Condition)}


def test_each_condition_is_named_once():
    values = list(conditions().values()) + [ua.value for ua in UnitAttention]
    assert len(values) == len(set(values))


def test_condition_builds_fixed_sense():
    cc = sense.END_OF_DATA_DETECTED(information=3, eom=True)
    raw = cc.sense()
    assert raw[0] == 0xF0 and raw[2] == 0x40 | SenseKey.BLANK_CHECK
    assert int.from_bytes(raw[3:7], "big") == 3 and raw[12:14] == b"\x00\x05"


def test_field_pointer_helpers():
    raw = sense.invalid_field_in_cdb(4, 2).sense()
    assert raw[2] == SenseKey.ILLEGAL_REQUEST and raw[12] == 0x24
    assert raw[15:18] == bytes((0x80 | 0x40 | 0x08 | 2, 0, 4))
    raw = sense.invalid_field_in_parameter_list(20, 3).sense()
    assert raw[12] == 0x26 and raw[15] == 0x80 | 0x08 | 3
    assert sense.invalid_opcode().sense()[15:18] == b"\xc0\x00\x00"


def test_hardware_error_result():
    res = sense.INTERNAL_TARGET_FAILURE.result()
    assert res.status == Status.CHECK_CONDITION
    assert res.sense == sense.INTERNAL_TARGET_FAILURE.sense()
    assert res.sense[2] == SenseKey.HARDWARE_ERROR and res.sense[12:14] == b"\x44\x00"


def test_unit_attentions_in_priority_order():
    order = list(UnitAttention)
    assert order[0] is UnitAttention.POWER_ON_RESET
    assert all(ua.value.key == SenseKey.UNIT_ATTENTION for ua in order)
    assert UnitAttention.MODE_PARAMETERS_CHANGED.condition().sense()[12:14] == b"\x2a\x01"
