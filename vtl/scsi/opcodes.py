"""Operation codes of every command the device models implement, named once.

The ``@command`` table (vtl.scsi.spc) registers handlers by these names, and transports that
look at byte 0 of a CDB themselves (the iSCSI target's REPORT LUNS and fast paths) compare
with them too, so a reader finds "which command is 0x34" in one place. Values from SPC-4
(common), SSC-3 (tape) and SMC-3 (changer); one opcode means different commands in different
device types (0x2B is LOCATE(10) on a tape drive and POSITION TO ELEMENT on a changer): both
names are here, the second an alias of the first.

Members are ``IntEnum``: they compare and hash as the byte itself. Code on the hot path that
compares against a fixed opcode binds ``int(Opcode.X)`` to a module constant, which skips the
enum attribute lookup per command.
"""

from __future__ import annotations

import enum


class Opcode(enum.IntEnum):
    # SPC-4 (every device type)
    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_BUFFER = 0x3C
    LOG_SELECT = 0x4C
    LOG_SENSE = 0x4D
    MODE_SELECT_10 = 0x55
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    READ_ATTRIBUTE = 0x8C
    WRITE_ATTRIBUTE = 0x8D
    REPORT_LUNS = 0xA0
    SECURITY_PROTOCOL_IN = 0xA2
    MAINTENANCE_IN = 0xA3  # service action 0x0C: REPORT SUPPORTED OPERATION CODES
    SECURITY_PROTOCOL_OUT = 0xB5

    # SSC-3 (sequential-access devices)
    REWIND = 0x01
    FORMAT_MEDIUM = 0x04
    READ_BLOCK_LIMITS = 0x05
    READ_6 = 0x08
    WRITE_6 = 0x0A
    SET_CAPACITY = 0x0B
    WRITE_FILEMARKS_6 = 0x10
    SPACE_6 = 0x11
    VERIFY_6 = 0x13
    ERASE = 0x19
    LOAD_UNLOAD = 0x1B
    LOCATE_10 = 0x2B
    READ_POSITION = 0x34
    REPORT_DENSITY_SUPPORT = 0x44
    SPACE_16 = 0x91
    LOCATE_16 = 0x92

    # SMC-3 (medium changers)
    INITIALIZE_ELEMENT_STATUS = 0x07
    POSITION_TO_ELEMENT = 0x2B  # alias of LOCATE_10: same byte, changer meaning
    INITIALIZE_ELEMENT_STATUS_WITH_RANGE = 0x37
    MOVE_MEDIUM = 0xA5
    EXCHANGE_MEDIUM = 0xA6
    READ_ELEMENT_STATUS = 0xB8
    # Pre-SMC-2 libraries (Exabyte) used 0xE7 for the ranged form; some software still sends it.
    INITIALIZE_ELEMENT_STATUS_WITH_RANGE_LEGACY = 0xE7


# MAINTENANCE IN service action (SPC-4 6.35).
REPORT_SUPPORTED_OPERATION_CODES = 0x0C
