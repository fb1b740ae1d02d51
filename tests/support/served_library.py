"""`vtl serve` in a subprocess for tests: start it on a free port, wait for its banner, stop
it with SIGTERM; the ``vtl`` CLI as a subprocess; and what /proc says about the server
(resident memory, threads), for the tests that bound what hostile clients can make it hold.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VTL = [str(Path(sys.executable).with_name("vtl"))]
def vtl(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*VTL, "--root", str(root), *args], capture_output=True, text=True,
                       timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    root: Path
    port: int
    proc: subprocess.Popen
    banner: str

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def stderr(self) -> str:
        return (self.root / "serve.err").read_text()


def start(root: Path, *args: str) -> Served:
    port = free_port()
    err = open(root / "serve.err", "w")  # lives as long as the server
    proc = subprocess.Popen([*VTL, "--root", str(root), "serve", "--portal",
                             f"127.0.0.1:{port}", *args],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip() == "ready":
            return Served(root, port, proc, "".join(lines))
    proc.kill()
    raise AssertionError(f"vtl serve did not start: {''.join(lines)}{(root / 'serve.err').read_text()}")


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (``VmRSS`` in KiB, ``Threads``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
