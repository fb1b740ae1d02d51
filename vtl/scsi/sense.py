"""The sense vocabulary: every condition a model or transport reports, named once.

A ``Condition`` is a sense key with its additional sense code and qualifier (SPC-4 4.5.6,
names as in SPC-4 Annex D). Call sites raise a named condition, adding only what belongs to
the one command (INFORMATION, FILEMARK/EOM/ILI, field pointer):

    raise MEDIUM_NOT_PRESENT()
    raise VOLUME_OVERFLOW(eom=True, information=residue)
    return INTERNAL_TARGET_FAILURE.result()

so no key/ASC/ASCQ triple is spelled in hex anywhere else (as tgt's ``ASC_*`` and the
kernel's ``sense_reason_t`` table). The bytes themselves are built in one place,
``vtl.scsi.base.CheckCondition.sense`` (``fixed_sense`` where nothing is raised; descriptor
format: ``vtl.scsi.spc.descriptor_sense``).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from vtl.scsi.base import CheckCondition, ScsiResult, SenseKey, fixed_sense


class Condition(NamedTuple):
    """A sense key + ASC + ASCQ; calling it makes the CheckCondition to raise."""

    key: SenseKey
    asc: int
    ascq: int

    def __call__(self, **details) -> CheckCondition:
        """The condition as an exception; ``details`` are CheckCondition's keyword fields."""
        return CheckCondition(self.key, self.asc, self.ascq, **details)

    def sense(self) -> bytes:
        """Plain fixed-format sense bytes (no INFORMATION, flags or field pointer)."""
        return fixed_sense(self.key, self.asc, self.ascq)

    def result(self) -> ScsiResult:
        """CHECK CONDITION with this sense, for a transport that answers a command itself."""
        return self().result()


_NO, _NR, _ME, _HW, _IR, _UA, _DP, _BC, _AC, _VO = (
    SenseKey.NO_SENSE, SenseKey.NOT_READY, SenseKey.MEDIUM_ERROR, SenseKey.HARDWARE_ERROR,
    SenseKey.ILLEGAL_REQUEST, SenseKey.UNIT_ATTENTION, SenseKey.DATA_PROTECT,
    SenseKey.BLANK_CHECK, SenseKey.ABORTED_COMMAND, SenseKey.VOLUME_OVERFLOW,
)

# ---- NO SENSE: a command that ended early for a reason the stream itself gives (SSC-3 4.2)
NO_ADDITIONAL_SENSE = Condition(_NO, 0x00, 0x00)  # with ILI: a block of another length
FILEMARK_DETECTED = Condition(_NO, 0x00, 0x01)
END_OF_PARTITION_MEDIUM_DETECTED = Condition(_NO, 0x00, 0x02)  # early warning: data written
BEGINNING_OF_MEDIUM_DETECTED = Condition(_NO, 0x00, 0x04)
PROGRAMMABLE_EARLY_WARNING_DETECTED = Condition(_NO, 0x00, 0x07)  # PEWS: data written
CLEANING_REQUESTED = Condition(_NO, 0x00, 0x17)  # REQUEST SENSE of a drive due for cleaning

# ---- BLANK CHECK / VOLUME OVERFLOW
END_OF_DATA_DETECTED = Condition(_BC, 0x00, 0x05)
VOLUME_OVERFLOW = Condition(_VO, 0x00, 0x02)  # END-OF-PARTITION/MEDIUM DETECTED, no room

# ---- NOT READY
LUN_BECOMING_READY = Condition(_NR, 0x04, 0x01)  # the cartridge is held elsewhere, retry
LUN_NOT_READY_OPERATION_IN_PROGRESS = Condition(_NR, 0x04, 0x07)
MEDIUM_NOT_PRESENT = Condition(_NR, 0x3A, 0x00)
CLEANING_IN_PROGRESS = Condition(_NR, 0x30, 0x03)  # CLEANING CARTRIDGE INSTALLED, cleaning

# ---- MEDIUM ERROR
WRITE_ERROR = Condition(_ME, 0x0C, 0x00)
UNRECOVERED_READ_ERROR = Condition(_ME, 0x11, 0x00)
INCOMPATIBLE_MEDIUM_INSTALLED = Condition(_ME, 0x30, 0x00)
CLEANING_CARTRIDGE_INSTALLED = Condition(_ME, 0x30, 0x03)  # not for data; or worn out

# ---- HARDWARE ERROR
MECHANICAL_POSITIONING_OR_CHANGER_ERROR = Condition(_HW, 0x3B, 0x16)
INTERNAL_TARGET_FAILURE = Condition(_HW, 0x44, 0x00)  # a bug: never a traceback to the host

# ---- ILLEGAL REQUEST
INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = Condition(_IR, 0x0E, 0x03)
PARAMETER_LIST_LENGTH_ERROR = Condition(_IR, 0x1A, 0x00)
INVALID_COMMAND_OPERATION_CODE = Condition(_IR, 0x20, 0x00)
INVALID_ELEMENT_ADDRESS = Condition(_IR, 0x21, 0x01)
INVALID_FIELD_IN_CDB = Condition(_IR, 0x24, 0x00)
LOGICAL_UNIT_NOT_SUPPORTED = Condition(_IR, 0x25, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = Condition(_IR, 0x26, 0x00)
INVALID_RELEASE_OF_PERSISTENT_RESERVATION = Condition(_IR, 0x26, 0x04)
SAVING_PARAMETERS_NOT_SUPPORTED = Condition(_IR, 0x39, 0x00)
MEDIUM_DESTINATION_ELEMENT_FULL = Condition(_IR, 0x3B, 0x0D)
MEDIUM_SOURCE_ELEMENT_EMPTY = Condition(_IR, 0x3B, 0x0E)
MEDIUM_REMOVAL_PREVENTED = Condition(_IR, 0x53, 0x02)
INSUFFICIENT_RESOURCES = Condition(_IR, 0x55, 0x03)
AUXILIARY_MEMORY_OUT_OF_SPACE = Condition(_IR, 0x55, 0x06)  # MAM full

# ---- DATA PROTECT
WRITE_PROTECTED = Condition(_DP, 0x27, 0x00)
CANNOT_WRITE_MEDIUM_INCOMPATIBLE_FORMAT = Condition(_DP, 0x30, 0x05)
WORM_MEDIUM_OVERWRITE_ATTEMPTED = Condition(_DP, 0x30, 0x0C)
# SSC-4 tape data encryption: a block the drive's key settings do not let it read
UNABLE_TO_DECRYPT_DATA = Condition(_DP, 0x74, 0x01)  # encrypted, no key (or not decrypting)
UNENCRYPTED_DATA_ENCOUNTERED_WHILE_DECRYPTING = Condition(_DP, 0x74, 0x02)
INCORRECT_DATA_ENCRYPTION_KEY = Condition(_DP, 0x74, 0x03)
CRYPTOGRAPHIC_INTEGRITY_VALIDATION_FAILED = Condition(_DP, 0x74, 0x04)

# ---- ABORTED COMMAND
LOGICAL_BLOCK_GUARD_CHECK_FAILED = Condition(_AC, 0x10, 0x01)  # LBP CRC of a block is wrong
DATA_PHASE_CRC_ERROR_DETECTED = Condition(_AC, 0x47, 0x01)
DATA_PHASE_ERROR = Condition(_AC, 0x4B, 0x00)


class UnitAttention(enum.Enum):
    """Unit attention conditions a model queues per nexus, reported in this priority order."""

    POWER_ON_RESET = Condition(_UA, 0x29, 0x00)
    BUS_DEVICE_RESET = Condition(_UA, 0x29, 0x03)
    NOT_READY_TO_READY = Condition(_UA, 0x28, 0x00)  # medium may have changed
    IMPORT_EXPORT_ACCESSED = Condition(_UA, 0x28, 0x01)
    MODE_PARAMETERS_CHANGED = Condition(_UA, 0x2A, 0x01)
    RESERVATIONS_PREEMPTED = Condition(_UA, 0x2A, 0x03)
    RESERVATIONS_RELEASED = Condition(_UA, 0x2A, 0x04)
    REGISTRATIONS_PREEMPTED = Condition(_UA, 0x2A, 0x05)
    MEDIUM_REMOVAL = Condition(_UA, 0x3A, 0x00)

    def condition(self) -> CheckCondition:
        return self.value()


# ---- conditions with a field pointer (SPC-4 4.5.2.4.2): the initiator sees the bad byte/bit
def invalid_opcode() -> CheckCondition:
    return INVALID_COMMAND_OPERATION_CODE(field_pointer=0)


def invalid_field_in_cdb(byte: int, bit: int | None = None) -> CheckCondition:
    return INVALID_FIELD_IN_CDB(field_pointer=byte, bit=bit)


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> CheckCondition:
    return INVALID_FIELD_IN_PARAMETER_LIST(field_pointer=byte, cd=False, bit=bit)
