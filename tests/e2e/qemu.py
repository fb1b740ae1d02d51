"""Boots the e2e guest under qemu (TCG) with iSCSI LUNs attached as scsi-generic devices.

qemu's libiscsi block driver is the iSCSI initiator; ``scsi-generic`` passes every CDB the
guest's st/ch/sg drivers send straight through to the target, so the target sees exactly
what a Linux host with a real HBA would send. The guest runs one shell script whose steps
are framed by markers on the serial console; :func:`boot` parses them into :class:`Step`s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .guest import Guest, overlay
from .targets import die_with_parent

INITIATOR = "iqn.2026-11.org.vtl-ebm:e2e-guest"


@dataclass(frozen=True)
class Lun:
    """One iSCSI LUN to attach: portal "host:port", target IQN, LUN number."""

    portal: str
    target: str
    lun: int
    # Extra qemu iscsi driver options for this LUN's session, e.g. "header-digest=crc32c".
    options: str = ""
    # Attach the same LUN again as another I_T nexus (its own iSCSI session and ISID): give
    # each attachment of one LUN its own number; the guest sees it at another target id.
    session: int = 0


@dataclass
class Step:
    name: str
    output: str
    rc: int


@dataclass
class Run:
    """What one boot produced: the whole serial log and the parsed steps."""

    log: str
    seconds: float
    returncode: int | None
    steps: dict[str, Step] = field(default_factory=dict)
    done: bool = False
    # More to show when an assertion fails, e.g. the target's log (set by the test).
    context: str = ""

    def __getitem__(self, name: str) -> Step:
        if name not in self.steps:
            raise AssertionError(f"guest step {name!r} did not run\n{self.describe()}")
        return self.steps[name]

    def ok(self, name: str) -> str:
        """The step's output, asserting it exited 0 (the whole log in the message if not)."""
        s = self[name]
        assert s.rc == 0, f"guest step {name!r} exited {s.rc}:\n{s.output}\n{self.describe()}"
        return s.output

    def describe(self) -> str:
        return (
            f"--- guest serial log ({self.seconds:.0f}s, qemu rc={self.returncode}) ---\n{self.log}"
            + (f"\n{self.context}" if self.context else "")
        )


def qemu_available() -> str | None:
    """None when qemu with the iSCSI block driver can run here, else the reason it cannot."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
    mods = list(Path("/usr/lib/x86_64-linux-gnu/qemu").glob("block-iscsi.so"))
    if not mods:
        return "qemu's iSCSI block driver is missing (Debian package qemu-block-extra)"
    probe = subprocess.run(
        [qemu, "-accel", "help"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if "tcg" not in probe.stdout:
        return "qemu has no TCG accelerator"
    return None


def parse_steps(log: str) -> dict[str, Step]:
    steps: dict[str, Step] = {}
    for m in re.finditer(r"@@STEP-BEGIN (\S+)@@\n(.*?)@@STEP-END \1 rc=(\d+)@@", log, flags=re.S):
        steps[m.group(1)] = Step(m.group(1), m.group(2), int(m.group(3)))
    return steps


def _watch(
    proc: subprocess.Popen, serial: Path, actions: dict[str, Callable[[], object]], deadline: float
) -> None:
    """Waits for qemu to exit (or the deadline), running host actions the guest asks for."""
    done: set[str] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        if actions and serial.exists():
            for name in re.findall(r"@@HOST (\S+)@@", serial.read_text(errors="replace")):
                if name not in done and name in actions:
                    done.add(name)
                    actions[name]()
        time.sleep(0.3)


def boot(
    guest: Guest,
    script: str,
    luns: list[Lun],
    *,
    wait_devs: tuple[str, ...] = (),
    timeout: float = 600,
    memory_mb: int = 512,
    workdir: Path | None = None,
    host_actions: dict[str, Callable[[], object]] | None = None,
    files: dict[str, bytes] | None = None,
) -> Run:
    """Boots the guest once, runs ``script`` (a sh fragment using ``step``) and returns the run.

    LUN ``i`` of ``luns`` appears in the guest as ``/dev/e2e/<i>-sg`` plus ``<i>-nst`` for a
    tape drive or ``<i>-sch`` for a changer, whatever order Linux numbered them in.

    ``files`` are more per-run files for /init (path in the initramfs: contents).

    ``host_actions`` lets the guest ask the host to act mid-run: when the guest prints
    ``@@HOST name@@`` the host calls ``host_actions[name]()`` once (e.g. a CLI command that
    changes the library under the guest's feet); the guest polls for the effect.

    The boot is bounded by ``timeout`` seconds; on expiry qemu is killed and the partial log
    is returned (``done`` False) so the caller's assertion shows how far the guest got.
    """
    own_tmp = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="vtl-e2e-")) if own_tmp else workdir
    assert wd is not None
    try:
        initrd = wd / "initrd.img"
        serial = wd / "serial.log"
        cmd = [
            "qemu-system-x86_64",
            "-accel", "tcg",
            "-m", str(memory_mb),
            "-smp", "1",
            "-nodefaults",
            "-display", "none",
            "-no-reboot",
            "-serial", f"file:{serial}",
            "-kernel", str(guest.kernel),
            "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
            "-device", "virtio-scsi-pci,id=scsi0",
            *guest.qemu_args,
        ]  # fmt: skip
        # The guest sees the same topology as an open-iscsi login: one SCSI target id per
        # iSCSI target, the iSCSI LUN as the LUN. (The ch driver matches the changer's DVCID
        # drive addresses against it.)
        target_ids: dict[tuple[str, str, int], int] = {}
        for i, lun in enumerate(luns):
            key = (lun.portal, lun.target, lun.session)
            tid = target_ids.setdefault(key, len(target_ids))
            cmd += [
                "-drive",
                f"driver=iscsi,transport=tcp,portal={lun.portal},target={lun.target},"
                f"lun={lun.lun},initiator-name={INITIATOR},if=none,id=d{i}"
                + (f",{lun.options}" if lun.options else ""),
                "-device",
                f"scsi-generic,drive=d{i},bus=scsi0.0,channel=0,scsi-id={tid},lun={lun.lun}",
            ]
        hctl = []
        for lun in luns:
            hctl.append(f"0:0:{target_ids[(lun.portal, lun.target, lun.session)]}:{lun.lun}")
        env = {"E2E_WAIT_DEVS": " ".join(wait_devs), "E2E_HCTL": " ".join(hctl)}
        initrd.write_bytes(guest.initrd.read_bytes() + overlay(script, env, files))
        start = time.monotonic()
        qlog = wd / "qemu.out"
        with qlog.open("wb") as qout_file:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=qout_file,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
            try:
                _watch(proc, serial, host_actions or {}, start + timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        seconds = time.monotonic() - start
        log = serial.read_text(errors="replace") if serial.exists() else ""
        log = log.replace("\r\n", "\n")
        qout = qlog.read_text(errors="replace")
        if qout:
            log += "\n--- qemu output ---\n" + qout
        keep = os.environ.get("VTL_E2E_LOGDIR")  # keep serial logs of passing runs too
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            name = os.environ.get("PYTEST_CURRENT_TEST", "run").split(" ")[0]
            (Path(keep) / (re.sub(r"[^\w.-]+", "_", name) + ".log")).write_text(log)
        run = Run(log=log, seconds=seconds, returncode=proc.returncode)
        run.steps = parse_steps(log)
        run.done = "@@E2E-DONE@@" in log
        return run
    finally:
        if own_tmp:
            shutil.rmtree(wd, ignore_errors=True)
