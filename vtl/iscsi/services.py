"""What a connection needs from the target that accepted it, as a small interface.

The connection modules depend on this Protocol, not on ``target.IscsiTarget``, so the import
graph has no connection <-> target circle: target.py builds connections, and a connection
reaches back only through these calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vtl.iscsi.config import ServerConfig, TargetConfig
    from vtl.iscsi.connection import Connection
    from vtl.iscsi.login import LoginHandler
    from vtl.iscsi.lun_worker import LunWorker
    from vtl.iscsi.session import Session
    from vtl.iscsi.task import Task
    from vtl.scsi.base import Nexus, ResetKind


class TargetServices(Protocol):
    """The target's side of a connection: configuration, LUN workers, sessions, TMFs."""

    config: ServerConfig

    def worker(self, target: TargetConfig, lun: int | None) -> LunWorker | None: ...

    def session_by_tsih(self, tsih: int) -> Session | None: ...

    def open_session(self, conn: Connection, login: LoginHandler, isid: bytes,
                     cmdsn: int) -> Session: ...

    def connection_closed(self, conn: Connection) -> None: ...

    def admit_initiator(self, conn: Connection, name: str) -> bool: ...

    def send_targets(self, conn: Connection, value: str) -> list[tuple[str, str]]: ...

    def abort_tasks(self, tasks: list[tuple[Connection, Task]]) -> bool: ...

    def abort_lun(self, target: TargetConfig, lun: int, only: Connection | None) -> None: ...

    def reset_device(self, target: TargetConfig, lun: int, kind: ResetKind,
                     nexus: Nexus) -> None: ...
