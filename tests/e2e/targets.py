"""Starts and stops the iSCSI targets the e2e tests talk to: tgt (the reference) and `vtl serve`.

Both listen on 127.0.0.1 on a free port and are killed by the fixture that started them.
tgt is Debian's stgt with its SSC tape emulation: it proves the harness (qemu, the guest,
st, mt, tar) independently of our own target.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"target exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class TgtTarget:
    """A running tgtd with one target whose LUN 1.. are SSC tapes backed by tgtimg files."""

    portal: str
    iqn: str
    control_port: int
    proc: subprocess.Popen
    tapes: list[Path] = field(default_factory=list)
    log: Path | None = None

    def adm(self, *args: str) -> str:
        return subprocess.run(
            ["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args],
            check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip

    def add_tape(self, lun: int, path: Path, barcode: str, size_mb: int = 256) -> None:
        subprocess.run(
            ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={barcode}",
             f"--size={size_mb}", "--type=data", f"--file={path}"],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.adm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", str(lun),
                 "--bstype", "ssc", "--device-type", "tape", "-b", str(path))  # fmt: skip
        self.tapes.append(path)


def _free_control_port() -> int:
    """tgtd's management channel is a unix socket named after this number: pick an unused one."""
    for _ in range(100):
        n = random.randint(10000, 32000)  # tgtd rejects > 32767
        if not os.path.exists(f"/var/run/tgtd/socket.{n}"):
            return n
    raise RuntimeError("no free tgtd control port")


def start_tgt(workdir: Path, iqn: str = "iqn.2026-11.org.vtl-ebm:tgt-reference") -> TgtTarget:
    port = free_port()
    cport = _free_control_port()
    log = workdir / "tgtd.log"
    proc = subprocess.Popen(
        ["tgtd", "-f", "-C", str(cport), "--iscsi", f"portal=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_listening(port, proc)
        tgt = TgtTarget(f"127.0.0.1:{port}", iqn, cport, proc, log=log)
        tgt.adm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", iqn)
        tgt.adm("--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL")
        return tgt
    except BaseException:
        stop(proc)
        raise
