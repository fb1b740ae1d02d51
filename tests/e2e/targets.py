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
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # qemu imports this module
    from .qemu import Lun


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the test process dies (even by os._exit on a
    pytest-timeout), so no qemu, tgtd or server outlives its test."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


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
        preexec_fn=die_with_parent,
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


@dataclass(frozen=True)
class DiscoveredLun:
    target: str
    lun: int
    type: str  # as iscsi-ls prints it: MEDIA_CHANGER, SEQUENTIAL_ACCESS, ...


def discover(
    portal: str, initiator: str = "iqn.2026-11.org.vtl-ebm:e2e-discovery"
) -> list[DiscoveredLun]:
    """SendTargets discovery plus REPORT LUNS/INQUIRY per target, by libiscsi's iscsi-ls.

    Using a real initiator here (rather than knowing the IQN and LUN layout in advance) keeps
    the e2e test valid whichever layout the target chose (one target with N LUNs, or one
    target per device).
    """
    out = subprocess.run(
        ["iscsi-ls", "-s", "-i", initiator, f"iscsi://{portal}"],
        check=True, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    luns: list[DiscoveredLun] = []
    target = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Target:"):
            target = line.split()[0].removeprefix("Target:")
        elif line.startswith("Lun:") and target:
            parts = line.split()
            luns.append(
                DiscoveredLun(
                    target, int(parts[0].removeprefix("Lun:")), parts[1].removeprefix("Type:")
                )
            )
    return luns


def vtl_command() -> list[str]:
    """The `vtl` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("vtl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vtl.cli.main"]


def _env(root: Path) -> dict[str, str]:
    """VTL_ROOT as well as --root, so the command never falls back to a default library."""
    return {**os.environ, "VTL_ROOT": str(root)}


#: The cartridge store every e2e library is made with (`vtl init --store`): the suite runs
#: unchanged on a dedup library with VTL_E2E_STORE=dedup (issue 16: SSC sees no difference).
E2E_STORE = os.environ.get("VTL_E2E_STORE", "plain")


def with_store(args: tuple[str, ...]) -> tuple[str, ...]:
    """``init`` arguments with the suite's store added (nothing added for the plain default)."""
    if args[:1] == ("init",) and E2E_STORE != "plain" and "--store" not in args:
        return (*args, "--store", E2E_STORE)
    return args


def vtl(root: Path, *args: str) -> str:
    """Runs one `vtl --root ROOT ...` command, failing with its output if it fails."""
    args = with_store(args)
    res = subprocess.run(
        [*vtl_command(), "--root", str(root), *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=_env(root),
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(
            f"vtl {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
        )
    return res.stdout


@dataclass
class VtlServer:
    """A running `vtl serve` and what SendTargets discovery found on it."""

    root: Path
    portal: str
    proc: subprocess.Popen
    log: Path
    luns: list[DiscoveredLun] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def guest_luns(self, drives: int = 1) -> list[Lun]:
        """The changer, then the first ``drives`` drives by LUN: what a guest attaches as
        /dev/e2e/0-*, 1-*, ..."""
        from .qemu import Lun

        changer = next(lu for lu in self.luns if lu.type == "MEDIA_CHANGER")
        tapes = sorted((lu for lu in self.luns if lu.type == "SEQUENTIAL_ACCESS"),
                       key=lambda lu: lu.lun)[:drives]
        return [Lun(self.portal, lu.target, lu.lun) for lu in (changer, *tapes)]


@contextmanager
def serving_vtl(root: Path, logdir: Path) -> Iterator[VtlServer]:
    """`vtl serve` on an initialised library for the length of a test."""
    srv = start_vtl(root, logdir)
    try:
        yield srv
    finally:
        stop(srv.proc, timeout=30)


def start_vtl(root: Path, logdir: Path) -> VtlServer:
    port = free_port()
    log = logdir / "vtl-serve.log"
    proc = subprocess.Popen(
        [*vtl_command(), "--root", str(root), "serve", "--portal", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=_env(root),
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        wait_listening(port, proc, timeout=30)
        server = VtlServer(root, f"127.0.0.1:{port}", proc, log)
        server.luns = discover(server.portal)
        return server
    except BaseException:
        stop(proc)
        raise
