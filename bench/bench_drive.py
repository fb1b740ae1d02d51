#!/usr/bin/env python3
"""Stream blocks to one tape drive over iSCSI and read them back: vtl vs tgt.

Why this exists: issue 3 asks that ``vtl serve`` match the peer (Debian's tgt with its SSC
tape emulation, ``--bstype ssc``) at every block size, reach 400 MB/s per drive at 256 KiB and
above, and keep its resident memory flat while streaming several GB. This script measures all
three in one run, on the same disk, with the same client, so the numbers are comparable.

The client (bench/iscsi_tape_client.c, libiscsi) issues one command at a time, as the Linux st
driver does: no queueing can hide per-command latency. It is compiled with gcc into
.cache/bench/ on first use.

Everything listens on 127.0.0.1 on free ports; every process started here is stopped at the
end, also on failure or Ctrl-C.

Usage (from the repository root):
    .venv/bin/python bench/bench_drive.py            # 64K/256K/1M, 2 GiB each, both targets
    .venv/bin/python bench/bench_drive.py --quick    # 256 MiB each
    .venv/bin/python bench/bench_drive.py --long     # also 8 GB at 256 KiB, RSS start/mid/end
    .venv/bin/python bench/bench_drive.py --json     # machine-readable result on stdout
    .venv/bin/python bench/bench_drive.py --legacy --data random --quick
                                  # 10K/32K/64512/64K/256K/1M of incompressible data
    .venv/bin/python bench/bench_drive.py --streams 4 --quick
                                  # 4 drives at once against one, 256 KiB, CPU per GB
    .venv/bin/python bench/bench_drive.py --legacy --quick --mode fixed
                                  # fixed-block mode, one block per command (mt setblk N)
    .venv/bin/python bench/bench_drive.py --legacy --quick --mode fixed --fixed-block 512
                                  # fixed 512-byte blocks, N/512 of them per command
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
LEGACY_SIZES = "10K,32K,64512,64K,256K,1M"
DATA_KINDS = {  # the client's --data, and what the report says of it
    "mixed": "4 KiB chunks alternating xorshift random bytes and log-like text lines",
    "random": "xorshift random bytes (incompressible)",
    "text": "log-like text lines",
    "zero": "zero bytes",
}
CLIENT_SRC = REPO / "bench" / "iscsi_tape_client.c"
CLIENT_BIN = CACHE / "iscsi_tape_client"
# The client's drive mode for every run: None = variable; 0 = fixed, one block per command;
# N = fixed N-byte blocks (main() sets it from --mode/--fixed-block).
FIXED_BLOCK: int | None = None
TGT_IQN = "iqn.2026-01.dev.vtl:bench-tgt"
VTL_IQN = "iqn.2026-01.dev.vtl:bench-vtl"
BARCODE = "BNCH01L8"
TGT_RUN_DIR = Path("/var/run/tgtd")
VTL_MAIN = "import sys; from vtl.cli.main import app; sys.argv[0] = 'vtl'; sys.exit(app())"


class BenchError(Exception):
    """A one-line reason the benchmark could not run (printed without a traceback)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """'64K', '256KiB', '1M', '2G', '1048576' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" else t
    try:
        value = int(float(num) * mult)
    except ValueError:
        raise BenchError(f"bad size {text!r}") from None
    if value <= 0:
        raise BenchError(f"bad size {text!r}")
    return value


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process (its own session), then SIGKILL if it does not go in time."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------- client


def build_client() -> Path:
    """Compile the libiscsi client into the cache when missing or older than its source."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if CLIENT_BIN.exists() and CLIENT_BIN.stat().st_mtime >= CLIENT_SRC.stat().st_mtime:
        return CLIENT_BIN
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BenchError("gcc not found: install build-essential")
    tmp = CLIENT_BIN.with_suffix(".tmp")
    cmd = [gcc, "-O2", "-Wall", "-o", str(tmp), str(CLIENT_SRC), "-liscsi"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchError(f"compiling the client failed (libiscsi-dev installed?): {res.stderr.strip()}")
    tmp.replace(CLIENT_BIN)
    log(f"built {CLIENT_BIN.relative_to(REPO)}")
    return CLIENT_BIN


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (through /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process tree (all threads), from /proc/PID/stat."""
    if pid is None:
        return 0.0, 0.0
    user = system = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process tree (all threads), from /proc/PID/stat."""
    return sum(cpu_split(pid))


class SwitchCounter:
    """Context switches of a server's threads (and its children's) during one client run,
    voluntary and involuntary, from /proc/PID/task/*/status polled every ``interval`` s (~0.5
    ms of the bench's CPU a poll, well under 1% of a CPU): a
    thread's counts go when it exits (a connection's thread at logout), so the last poll is
    kept, and at most one interval of its switches is missed. A thread that sleeps until the
    next command (client on another vCPU: a cross-vCPU wake-up per command) switches
    voluntarily; one preempted by the client it woke (both on one vCPU), involuntarily."""

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid = pid
        self.procs = proc_tree(pid) if pid else []  # tgtd and vtl serve start none mid-run
        self.interval = interval
        self.first: dict[str, tuple[int, int]] = {}
        self.last: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for p in self.procs:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{p}/task"):
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        text = Path(f"/proc/{p}/task/{tid}/status").read_text()
                        vol = int(text.split("\nvoluntary_ctxt_switches:")[1].split()[0])
                        inv = int(text.split("nonvoluntary_ctxt_switches:")[1].split()[0])
                        out[tid] = (vol, inv)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self._poll())

    def __enter__(self) -> SwitchCounter:
        self.first = self._poll()
        self.last = dict(self.first)
        if self.pid:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.last.update(self._poll())

    def per(self, n: int) -> list[float]:
        """[voluntary, involuntary] switches per ``n`` (commands) over the run."""
        vol = sum(v - self.first.get(t, (0, 0))[0] for t, (v, _) in self.last.items())
        inv = sum(i - self.first.get(t, (0, 0))[1] for t, (_, i) in self.last.items())
        return [vol / n, inv / n] if n else [0.0, 0.0]


def _client(portal: str, iqn: str, lun: int, block_size: int, count: int, verify: bool,
            timeout: float, phase: str, compression: bool = True,
            data: str = "mixed") -> dict[str, Any]:
    cmd = [str(CLIENT_BIN), portal, iqn, str(lun), str(block_size), str(count), f"--{phase}-only",
           "--data", data]
    if not verify:
        cmd.append("--no-verify")
    if not compression:
        cmd.append("--no-compression")
    if FIXED_BLOCK is not None:
        cmd += ["--fixed", str(FIXED_BLOCK)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"client timed out after {timeout:.0f}s against {iqn}") from None
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"client failed against {iqn}: {res.stderr.strip() or res.stdout.strip()}") from None


def run_client(portal: str, iqn: str, lun: int, block_size: int, count: int, verify: bool,
               timeout: float, server_pid: int | None = None,
               compression: bool = True, data: str = "mixed") -> dict[str, Any]:
    """Write phase then read phase (two client runs), with the server's CPU time for each.
    ``compression=False``: the client turns the drive's compression off (MODE SELECT)."""
    c0 = cpu_seconds(server_pid)
    with SwitchCounter(server_pid) as sw:
        w = _client(portal, iqn, lun, block_size, count, verify, timeout, "write", compression,
                    data)
    c1 = cpu_seconds(server_pid)
    out: dict[str, Any] = {k: w[k] for k in ("block_size", "count", "written", "write_s", "wfm_s",
                                             "early_warning")}
    out["errors"] = list(w["errors"])
    out["ok"] = w["ok"]
    out["read"], out["read_s"], out["mismatches"] = 0, 0.0, 0
    out["server_cpu_write_s"] = c1 - c0
    out["client_cpu_write_s"] = w["client_cpu_s"]
    out["server_switches_write"] = sw.per(w["written"])
    if w["ok"]:
        with SwitchCounter(server_pid) as sr:
            r = _client(portal, iqn, lun, block_size, w["written"], verify, timeout, "read",
                        compression, data)
        c2 = cpu_seconds(server_pid)
        out["server_switches_read"] = sr.per(r["read"])
        out["read"], out["read_s"], out["mismatches"] = r["read"], r["read_s"], r["mismatches"]
        out["errors"] += r["errors"]
        out["ok"] = r["ok"]
        out["server_cpu_read_s"] = c2 - c1
        out["client_cpu_read_s"] = r["client_cpu_s"]
    nbytes = out["written"] * block_size
    wtime = out["write_s"] + out["wfm_s"]
    out["bytes"] = nbytes
    out["write_mbps"] = nbytes / 1e6 / wtime if wtime > 0 and nbytes else 0.0
    out["read_mbps"] = out["read"] * block_size / 1e6 / out["read_s"] if out["read_s"] > 0 else 0.0
    gb = nbytes / 1e9
    if gb:
        out["server_cpu_s_per_gb_write"] = out["server_cpu_write_s"] / gb
        if "server_cpu_read_s" in out:
            out["server_cpu_s_per_gb_read"] = out["server_cpu_read_s"] / gb
    return out


def data_ratio(block_size: int, kind: str = "mixed") -> float | None:
    """zstd level-3 ratio of the client's data, computed on the same generator (Python copy).

    Kept as a check on the claim "half compressible": it must stay near 2 for ``mixed``.
    """
    try:
        import zstandard
    except ImportError:
        return None
    chunk = 4096
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    out = bytearray()
    line = 0
    size = max(block_size, 1 << 20)
    for off in range(0, size, chunk):
        if kind == "zero":
            out += bytes(chunk)
        elif kind == "random" or (kind == "mixed" and (off // chunk) % 2 == 0):
            buf = bytearray(chunk)
            for i in range(chunk):
                x ^= (x << 13) & mask
                x ^= x >> 7
                x ^= (x << 17) & mask
                buf[i] = (x >> 32) & 0xFF
            out += buf
        else:
            text = bytearray()
            line = off // chunk
            while len(text) < chunk:
                text += (f"2026-11-25T14:{line % 60:02d}:{(line // 60) % 60:02d} host "
                         f"backup[{4000 + line % 7}]: wrote block {line} ok\n").encode()
                line += 1
            out += text[:chunk]
    c = zstandard.ZstdCompressor(level=3)
    total = comp = 0
    for off in range(0, len(out) - block_size + 1, block_size):
        blk = bytes(out[off:off + block_size])
        total += len(blk)
        comp += len(c.compress(blk))
    return total / comp if comp else None


# ---------------------------------------------------------------- memory sampling


@dataclass
class RssSampler:
    """Samples VmRSS of a process (and its children) every `interval` seconds in a thread."""

    pid: int
    interval: float = 0.25
    samples: list[tuple[float, int]] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    t0: float = field(default_factory=time.monotonic)

    @staticmethod
    def rss_kib(pid: int) -> int:
        total = 0
        for p in proc_tree(pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.t0, self.rss_kib(self.pid)))
            self._stop.wait(self.interval)

    def mark(self, name: str) -> int:
        value = self.rss_kib(self.pid)
        self.marks[name] = value
        return value

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    @property
    def peak_kib(self) -> int:
        return max((v for _, v in self.samples), default=0)

    def peak_since(self, since: float) -> int:
        """Largest sample taken after the monotonic time `since`."""
        return max((v for t, v in self.samples if t >= since - self.t0), default=0)


# ---------------------------------------------------------------- targets


def bench_barcode(i: int) -> str:
    """The cartridge (or tgt tape image) of drive ``i``."""
    return BARCODE if i == 0 else f"BNCH{i + 1:02d}L8"


class Target:
    """A running iSCSI target with tape drives at (iqn, lun), (iqn, lun + 1), ..."""

    name = "?"
    iqn = ""
    lun = 1
    compresses = False  # tgt's SSC emulation stores blocks as they come
    portal = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pid_for_stats(self) -> int | None:
        """The server process whose CPU and memory are measured."""
        return self.proc.pid if self.proc else None


class TgtTarget(Target):
    """Debian's tgt: tgtd in the foreground, a tape image from tgtimg, an SSC logical unit.

    tgtd talks to tgtadm through /var/run/tgtd/socket.<control port>; a random unused control
    port keeps this instance apart from any other tgtd on the machine.
    """

    name = "tgt"

    def __init__(self, workdir: Path, capacity: int, drives: int = 1) -> None:
        self.dir = workdir / "tgt"
        self.capacity = capacity
        self.drives = drives  # tape LUNs 1..drives, an image each
        self.iqn = TGT_IQN
        self.lun = 1  # LUN 0 is tgt's own controller LU
        self.cport = 0
        self.log_file: Any = None

    def _adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["tgtadm", "-C", str(self.cport), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise BenchError(f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")
        return res

    def _pick_control_port(self) -> int:
        for _ in range(200):
            p = random.randint(10000, 32000)
            if not (TGT_RUN_DIR / f"socket.{p}").exists() and not (TGT_RUN_DIR / f"socket.{p}.lock").exists():
                return p
        raise BenchError("no free tgtd control port")

    def start(self) -> None:
        for tool in ("tgtd", "tgtadm", "tgtimg"):
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} not found: apt-get install tgt")
        self.dir.mkdir(parents=True, exist_ok=True)
        images = [self.dir / ("tape.img" if i == 0 else f"tape{i}.img")
                  for i in range(self.drives)]
        size_mb = self.capacity // 1_000_000 + 256
        for i, image in enumerate(images):
            res = subprocess.run(
                ["tgtimg", "--op", "new", "--device-type", "tape", "--barcode",
                 bench_barcode(i), "--size", str(size_mb), "--type", "data", "--file",
                 str(image), "--thin-provisioning"],
                capture_output=True, text=True)
            if res.returncode != 0:
                raise BenchError(f"tgtimg failed: {res.stderr.strip()}")
        TGT_RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.cport = self._pick_control_port()
        port = free_port()
        self.portal = f"127.0.0.1:{port}"
        self.log_file = open(self.dir / "tgtd.log", "wb")
        # -D: foreground without per-command debug logging (-f turns debug output on, which
        # would make tgt slower than it is).
        self.proc = subprocess.Popen(
            ["tgtd", "-D", "-C", str(self.cport), "--iscsi", f"portal={self.portal}"],
            stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        try:
            wait_listening(port, self.proc, 15, "tgtd")
        except BenchError as e:
            log_text = (self.dir / "tgtd.log").read_text(errors="replace").strip()
            raise BenchError(f"{e}: {log_text[-300:]}") from None
        self._adm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", self.iqn)
        for i, image in enumerate(images):
            self._adm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", "1",
                      "--lun", str(self.lun + i), "-b", str(image), "--bstype", "ssc",
                      "--device-type", "tape")
        self._adm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1",
                  "--initiator-address", "127.0.0.1")
        log(f"tgt: tgtd pid {self.proc.pid} on {self.portal} (control port {self.cport}), "
            f"{self.iqn} lun {self.lun}" + (f"-{self.lun + self.drives - 1}" if self.drives > 1
                                             else "") + f", image {images[0]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # tgtd ignores SIGTERM while it has targets: take it offline and delete the system.
            with contextlib.suppress(Exception):
                self._adm("--op", "update", "--mode", "sys", "--name", "State", "-v", "offline",
                          check=False)
                self._adm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "1",
                          "--force", check=False)
                self._adm("--op", "delete", "--mode", "system", check=False)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, grace=3)
        if self.cport:
            for suffix in ("", ".lock"):
                with contextlib.suppress(OSError):
                    (TGT_RUN_DIR / f"socket.{self.cport}{suffix}").unlink()
        if self.log_file:
            self.log_file.close()
            self.log_file = None


class VtlTarget(Target):
    """`vtl serve` on a fresh temporary library with one cartridge loaded into drive 0."""

    name = "vtl"
    compresses = True

    def __init__(self, workdir: Path, media: str | None, profile: str | None,
                 src: Path | None = None, drives: int = 1) -> None:
        self.root = workdir / "vtl-library"
        self.drives = drives  # drive i is LUN 1 + i, a cartridge loaded in each
        self.iqn = VTL_IQN
        self.lun = 1  # LUN 0 = changer, LUN 1 = drive 0 (vtl.scsi.devices.build_device_set)
        self.media = media
        self.profile = profile
        # Another checkout of the code (A/B of a change) served with PYTHONPATH=src.
        self.src = src
        self.log_path = workdir / "vtl-serve.log"
        self.log_file: Any = None

    def _vtl_cmd(self) -> list[str]:
        exe = REPO / ".venv" / "bin" / "vtl"
        if self.src is None and exe.exists():
            return [str(exe)]
        return [sys.executable, "-c", VTL_MAIN]

    def _vtl(self, *args: str) -> str:
        cmd = [*self._vtl_cmd(), "--root", str(self.root), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             cwd=self.src or REPO, env=self._env())
        if res.returncode != 0:
            raise BenchError(f"{' '.join(cmd[len(self._vtl_cmd()):])}: "
                             f"{(res.stderr or res.stdout).strip()}")
        return res.stdout

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src.resolve())
        return env

    def start(self) -> None:
        port = free_port()
        self.portal = f"127.0.0.1:{port}"
        init = ["init", "--drives", str(self.drives), "--slots", str(max(4, self.drives)),
                "--mailslots", "1", "--portal", self.portal, "--iqn", self.iqn]
        self._vtl(*init)
        for i in range(self.drives):
            create = ["cartridge", "create", bench_barcode(i)]
            if self.media:
                create += ["--media", self.media]
            self._vtl(*create)
            self._vtl("load", bench_barcode(i), str(i))
        env = self._env()
        cmd = [*self._vtl_cmd(), "--root", str(self.root), "serve", "--portal", self.portal]
        if self.profile in ("py-spy", "py-spy-gil"):
            # raw = collapsed stacks, one line per stack with its sample count (greppable);
            # py-spy-gil samples only the thread holding the GIL (where Python CPU goes).
            pyspy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
            extra = ["--gil"] if self.profile == "py-spy-gil" else []
            cmd = [pyspy, "record", "--nonblocking", "-r", "250", "-f", "raw", *extra,
                   "-o", str(CACHE / f"vtl-serve.{self.profile}.txt"), "--", *cmd]
        elif self.profile == "cprofile":
            # cProfile sees the event-loop thread only (the LUN workers are other threads).
            script = CACHE / "vtl_main.py"
            script.write_text(VTL_MAIN + "\n")
            cmd = [sys.executable, "-m", "cProfile", "-o", str(CACHE / "vtl-serve.prof"),
                   str(script), "--root", str(self.root), "serve", "--portal", self.portal]
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.src or REPO, env=env)
        wait_listening(port, self.proc, 30, "vtl serve")
        log(f"vtl: serve pid {self.proc.pid} on {self.portal}, {self.iqn} lun {self.lun}, "
            f"library {self.root}")

    def pid_for_stats(self) -> int | None:
        return self.server_pid

    @property
    def server_pid(self) -> int | None:
        """The Python process that serves (under py-spy it is py-spy's child)."""
        if self.proc is None:
            return None
        if self.profile in ("py-spy", "py-spy-gil"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                return int(kids[0])
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM: the server finishes in-flight commands and syncs cartridges (issue 3);
            # under a profiler, signal the server itself so the profiler writes its output.
            pid = self.server_pid
            if self.profile in ("py-spy", "py-spy-gil") and pid and pid != self.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
            elif self.profile == "cprofile":
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
            stop_process(self.proc, grace=20)
        if self.log_file:
            self.log_file.close()
            self.log_file = None

    def tail_log(self, n: int = 5) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


# ---------------------------------------------------------------- the run


@contextlib.contextmanager
def running(target: Target) -> Iterator[Target]:
    try:
        target.start()
        yield target
    finally:
        target.stop()


def sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, handler)


def fmt_table(rows: list[dict[str, Any]], targets: list[str]) -> str:
    head = ["block size"]
    for t in targets:
        head += [f"{t} write MB/s", f"{t} read MB/s"]
    if "tgt" in targets and "vtl" in targets:
        head += ["vtl/tgt write", "vtl/tgt read"]
    lines = [head]
    for r in rows:
        line = [human(r["block_size"])]
        for t in targets:
            res = r.get(t)
            if res is None or "error" in res:
                line += ["FAIL", "FAIL"]
            else:
                line += [f"{res['write_mbps']:.0f}", f"{res['read_mbps']:.0f}"]
        if "tgt" in targets and "vtl" in targets:
            line += [f"{r['ratio_write']:.2f}" if r.get("ratio_write") else "-",
                     f"{r['ratio_read']:.2f}" if r.get("ratio_read") else "-"]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = []
    for i, row in enumerate(lines):
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def measure(target: Target, bs: int, total: int, verify: bool, timeout: float,
            sampler: RssSampler | None, compression: bool = True,
            data: str = "mixed") -> dict[str, Any]:
    count = max(1, total // bs)
    log(f"{target.name}: {count} x {human(bs)} write + read ({human(count * bs)})")
    t0 = time.monotonic()
    before = sampler.rss_kib(sampler.pid) if sampler else None
    try:
        res = run_client(target.portal, target.iqn, target.lun, bs, count, verify, timeout,
                         target.pid_for_stats(), compression or not target.compresses, data)
    except BenchError as e:
        return {"error": str(e)}
    if sampler:
        res["rss_before_kib"] = before
        res["rss_after_kib"] = sampler.rss_kib(sampler.pid)
        res["rss_peak_kib"] = max(sampler.peak_since(t0), res["rss_after_kib"])
    if not res.get("ok"):
        res["error"] = "; ".join(
            f"{e['op']}#{e['index']}: status {e['status']} {e['key']} {e['ascq']} sense={e['sense']} {e['msg']}".strip()
            for e in res.get("errors", [])) or "client reported failure"
    log(f"{target.name}: {human(bs)}: write {res['write_mbps']:.0f} MB/s "
        f"(blocks {res['write_s']:.2f}s + filemark {res['wfm_s']:.2f}s), "
        f"read {res['read_mbps']:.0f} MB/s ({res['read_s']:.2f}s)"
        + (f", server CPU {res.get('server_cpu_s_per_gb_write', 0):.2f}/"
           f"{res.get('server_cpu_s_per_gb_read', 0):.2f} s per GB w/r" if res.get("bytes") else "")
        + (f"  ERROR {res['error']}" if "error" in res else ""))
    return res


def best_of(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Keep the best of repeated runs: highest MB/s, lowest CPU per GB (noise only slows)."""
    if old is None or "error" in new:
        return new if old is None or "error" not in old else old
    if "error" in old:
        return new
    out = dict(new)
    out["runs"] = old.get("runs", 1) + 1
    out["each_run"] = old.get("each_run", [_run_summary(old)]) + [_run_summary(new)]
    for key in ("write_mbps", "read_mbps"):
        out[key] = max(old[key], new[key])
    for key in ("server_cpu_s_per_gb_write", "server_cpu_s_per_gb_read"):
        if key in old and key in new:
            out[key] = min(old[key], new[key])
    return out


def _run_summary(res: dict[str, Any]) -> dict[str, Any]:
    """One run's MB/s and server switches per command, kept by ``best_of`` for the report."""
    return {k: res[k] for k in ("write_mbps", "read_mbps", "server_switches_write",
                                "server_switches_read") if k in res}


def box_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every CPU since boot, from /proc/stat: busy is all but
    idle and iowait, so it also counts the kernel's threads (write-back) and other jobs."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def _phase_together(target: Target, luns: list[int], bs: int, count: int, verify: bool,
                    timeout: float, phase: str, compression: bool, data: str
                    ) -> tuple[list[dict[str, Any]], float, float, float, dict[str, float]]:
    """One phase (write or read) on every LUN at once, one client each: (the clients'
    results, wall seconds from the first start to the last end, server CPU seconds, the
    share of the machine's CPUs busy meanwhile, 0-1: near 1 the phase was CPU-bound, by
    whatever ran; the server's system share of its CPU and its voluntary and involuntary
    context switches per command)."""
    pid = target.pid_for_stats()
    u0, s0 = cpu_split(pid)
    b0, a0 = box_ticks()
    t0 = time.monotonic()
    with SwitchCounter(pid) as sw, ThreadPoolExecutor(len(luns)) as pool:
        results = list(pool.map(lambda lun: _client(
            target.portal, target.iqn, lun, bs, count, verify, timeout, phase, compression,
            data), luns))
    wall = time.monotonic() - t0
    b1, a1 = box_ticks()
    u1, s1 = cpu_split(pid)
    cpu = (u1 - u0) + (s1 - s0)
    vol, inv = sw.per(sum(r["written" if phase == "write" else "read"] for r in results))
    how = {"sys_share": (s1 - s0) / cpu if cpu > 0 else 0.0, "switches_vol": vol,
           "switches_inv": inv}
    return results, wall, cpu, (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0, how


def _data_window(got: list[dict[str, Any]], phase: str) -> float:
    """Seconds from the first client's first data command to the last one's completion
    (0 if a client did not report its window)."""
    spans = [r.get(f"{phase}_window") for r in got]
    if not spans or any(not w or w[0] <= 0 or w[1] < w[0] for w in spans):
        return 0.0
    return max(w[1] for w in spans) - min(w[0] for w in spans)


def measure_streams(target: Target, streams: int, bs: int, total: int, verify: bool,
                    timeout: float, compression: bool, data: str) -> dict[str, Any]:
    """``total`` bytes at ``bs`` on one drive, then on ``streams`` drives at once (one client
    each, the same bytes per drive): aggregate MB/s of each (all drives' bytes over the
    window from the first data command to the last one's completion, as fio reports a
    group; the older figure over the whole phase, client start-up and login included, is
    kept as ``*_mbps_phase``) and the server's CPU per GB."""
    count = max(1, total // bs)
    out: dict[str, Any] = {"block_size": bs, "streams": streams, "count": count}
    for n in (1, streams):
        log(f"{target.name}: {n} stream(s) x {count} x {human(bs)} write + read")
        luns = [target.lun + i for i in range(n)]
        res: dict[str, Any] = {}
        for phase in ("write", "read"):
            try:
                got, wall, cpu, busy, how = _phase_together(target, luns, bs, count, verify,
                                                            timeout, phase, compression, data)
            except BenchError as e:
                return {**out, "error": str(e)}
            bad = [r for r in got if not r.get("ok")]
            if bad:
                return {**out, "error": f"{phase}: {bad[0].get('errors')}"}
            nbytes = sum(r["written" if phase == "write" else "read"] for r in got) * bs
            # fio's group bandwidth: the bytes over the window from the first data command's
            # start to the last one's completion (writing, the filemark's: the data durable),
            # on every client's clock (CLOCK_MONOTONIC); the same rule for one stream and N,
            # tgt and vtl. The phase's wall time (client start-up, login and REWIND in it)
            # is kept as the older figure.
            window = _data_window(got, phase)
            res[f"{phase}_mbps"] = nbytes / 1e6 / window if window > 0 else nbytes / 1e6 / wall
            res[f"{phase}_mbps_phase"] = nbytes / 1e6 / wall
            res[f"window_s_{phase}"] = window
            res[f"cpu_s_per_gb_{phase}"] = cpu / (nbytes / 1e9)
            res[f"box_busy_{phase}"] = busy
            for key, value in how.items():
                res[f"{key}_{phase}"] = value
            if phase == "write":  # where the phase's wall time went: the WRITEs, the filemark
                res["wall_s_write"] = wall
                res["blocks_s_fastest"] = min(r["write_s"] for r in got)
                res["blocks_s_slowest"] = max(r["write_s"] for r in got)
                res["filemark_s_slowest"] = max(r["wfm_s"] for r in got)
            else:  # and the READs' (the rest is client start-up, login and REWIND)
                res["wall_s_read"] = wall
                res["reads_s_fastest"] = min(r["read_s"] for r in got)
                res["reads_s_slowest"] = max(r["read_s"] for r in got)
            res[f"client_cpu_s_per_gb_{phase}"] = sum(r["client_cpu_s"] for r in got) / (
                nbytes / 1e9)
        out[f"x{n}"] = res
        log(f"{target.name}: {n} stream(s): write {res['write_mbps']:.0f} MB/s, read "
            f"{res['read_mbps']:.0f} MB/s (over the phase {res['write_mbps_phase']:.0f}/"
            f"{res['read_mbps_phase']:.0f}), server CPU {res['cpu_s_per_gb_write']:.2f}/"
            f"{res['cpu_s_per_gb_read']:.2f} s per GB w/r, clients "
            f"{res['client_cpu_s_per_gb_write']:.2f}/{res['client_cpu_s_per_gb_read']:.2f}, "
            f"CPUs busy {res['box_busy_write']:.0%}/{res['box_busy_read']:.0%}; write phase "
            f"{res['wall_s_write']:.2f} s: WRITEs {res['blocks_s_fastest']:.2f}-"
            f"{res['blocks_s_slowest']:.2f} s, filemark up to {res['filemark_s_slowest']:.2f} s; "
            f"read phase {res['wall_s_read']:.2f} s: READs {res['reads_s_fastest']:.2f}-"
            f"{res['reads_s_slowest']:.2f} s; "
            f"server system share {res['sys_share_write']:.0%}/{res['sys_share_read']:.0%}, "
            f"switches per command {res['switches_vol_write']:.2f}+{res['switches_inv_write']:.2f}/"
            f"{res['switches_vol_read']:.2f}+{res['switches_inv_read']:.2f} w/r (voluntary+"
            f"involuntary)")
    _scaling(out, streams)
    return out


def _scaling(out: dict[str, Any], streams: int) -> None:
    """N streams / one stream, and the most the CPUs allow it: the N streams' CPU ceiling
    (server + clients at their CPU per GB) over one stream's MB/s. A bound under the goal
    means no scheduling can reach it at that CPU cost; only a lower CPU per GB can."""
    one, many = out["x1"], out[f"x{streams}"]
    cpus = os.cpu_count() or 1
    for phase in ("write", "read"):
        out[f"scaling_{phase}"] = many[f"{phase}_mbps"] / one[f"{phase}_mbps"]
        if f"{phase}_mbps_phase" in many and f"{phase}_mbps_phase" in one:
            out[f"scaling_{phase}_phase"] = (many[f"{phase}_mbps_phase"]
                                             / one[f"{phase}_mbps_phase"])
        out[f"scaling_bound_{phase}"] = _ceiling(many, phase, cpus) / one[f"{phase}_mbps"]


def print_streams(result: dict[str, Any]) -> None:
    cfg = result["config"]
    n = cfg["streams"]
    print(f"\n{n} streams on {n} drives of one target (one libiscsi client each, one command "
          f"at a time) against one stream, {human(cfg['total_per_size'])} per drive at "
          f"{human(cfg['streams_size'])}, best of {cfg['repeat']}; data: {cfg['data']}; "
          f"{cfg['cpus']} CPUs, load {cfg['loadavg_start']:.1f} -> {cfg['loadavg_end']:.1f}")
    print("MB/s = all drives' bytes / the window from the first data command to the last "
          "one's completion (as fio reports a group; writing, the filemark's completion), in "
          "brackets over the whole phase (client start, login and REWIND included); CPU = server user+sys seconds per GB (the clients' in brackets);\n"
          f"CPU ceiling = the MB/s at which server + clients would use all {cfg['cpus']} CPUs "
          "(the kernel's write-back threads not counted); CPUs busy = share of all CPUs busy "
          "during the phase\n(anything that ran: the kernel's threads, other jobs), the lowest "
          "of the runs; server sys = the kernel's share of the server's CPU; switches/cmd = "
          "the server's context switches per command\n")
    rows = [["target", "streams", "write MB/s", "read MB/s", "CPU/GB write", "CPU/GB read",
             "CPU ceiling w/r", "CPUs busy w/r", "server sys w/r", "switches/cmd w/r"]]
    for name, res in result["streams"].items():
        if "error" in res:
            rows.append([name, "-", "FAIL", "FAIL", "-", res["error"][:40], "-", "-", "-", "-"])
            continue
        for k in (1, n):
            r = res[f"x{k}"]
            rows.append([name, str(k), _mbps_cell(r, "write"), _mbps_cell(r, "read"),
                         _cpu_cell(r, "write"), _cpu_cell(r, "read"),
                         f"{_ceiling(r, 'write', cfg['cpus']):.0f} / "
                         f"{_ceiling(r, 'read', cfg['cpus']):.0f}",
                         f"{r.get('box_busy_write', 0):.0%} / {r.get('box_busy_read', 0):.0%}",
                         f"{r.get('sys_share_write', 0):.0%} / {r.get('sys_share_read', 0):.0%}",
                         f"{_switches(r, 'write')} / {_switches(r, 'read')}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for name, res in result["streams"].items():
        if "error" not in res:
            print(f"{name}: {n} streams / 1 stream: write {res['scaling_write']:.2f}x, read "
                  f"{res['scaling_read']:.2f}x (the CPUs allow at most "
                  f"{res['scaling_bound_write']:.2f}x / {res['scaling_bound_read']:.2f}x: "
                  f"the {n} streams' CPU ceiling over one stream's MB/s)")
            if "each_scaling" in res:
                print(f"{name}: each run's {n}/1 write / read: " + ", ".join(
                    f"{w:.2f}x / {r:.2f}x" for w, r in res["each_scaling"]))
            if "scaling_write_phase" in res:
                print(f"{name}: the same over the whole phases (the older figure): write "
                      f"{res['scaling_write_phase']:.2f}x, read {res['scaling_read_phase']:.2f}x")


def _mbps_cell(r: dict[str, Any], phase: str) -> str:
    """A phase's MB/s over its data window, over the whole phase in brackets."""
    cell = f"{r[f'{phase}_mbps']:.0f}"
    if f"{phase}_mbps_phase" in r:
        cell += f" ({r[f'{phase}_mbps_phase']:.0f})"
    return cell


def _switches(r: dict[str, Any], phase: str) -> str:
    """The server's context switches per command in a phase, voluntary + involuntary."""
    return f"{r.get(f'switches_vol_{phase}', 0) + r.get(f'switches_inv_{phase}', 0):.1f}"


def _cpu_cell(r: dict[str, Any], phase: str) -> str:
    """Server CPU per GB of a phase, the clients' in brackets."""
    return f"{r[f'cpu_s_per_gb_{phase}']:.2f} ({r.get(f'client_cpu_s_per_gb_{phase}', 0):.2f})"


def _ceiling(r: dict[str, Any], phase: str, cpus: int) -> float:
    """MB/s at which the server and the clients together would keep every CPU busy: what
    the machine allows the phase at this CPU per GB, however many streams run."""
    per_gb = r[f"cpu_s_per_gb_{phase}"] + r.get(f"client_cpu_s_per_gb_{phase}", 0)
    return cpus / per_gb * 1000 if per_gb > 0 else 0.0


def best_streams(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The best of repeated stream runs, figure by figure (as ``best_of``)."""
    if old is None or "error" in old:
        return new
    if "error" in new:
        return old
    out = dict(new)
    for k in ("x1", f"x{new['streams']}"):
        a, b = old[k], new[k]
        out[k] = {key: (max if "mbps" in key else min)(a[key], b[key]) for key in a if key in b}
    _scaling(out, new["streams"])
    out["each_scaling"] = old.get("each_scaling", [_run_scaling(old)]) + [_run_scaling(new)]
    return out


def _run_scaling(res: dict[str, Any]) -> tuple[float, float]:
    """One stream run's N/1 write and read ratios (the best-of mixes runs figure by figure)."""
    return res["scaling_write"], res["scaling_read"]


def long_run(vtl: VtlTarget, total: int, bs: int, verify: bool, timeout: float,
             compression: bool = True, data: str = "mixed") -> dict[str, Any]:
    """Stream `total` bytes at `bs` and report the server's RSS at start, middle and end."""
    pid = vtl.server_pid
    assert pid is not None
    sampler = RssSampler(pid, interval=0.5)
    start_rss = sampler.rss_kib(pid)
    sampler.start()
    t0 = time.monotonic()
    try:
        res = measure(vtl, bs, total, verify, timeout, None, compression, data)
    finally:
        sampler.stop()
    elapsed = time.monotonic() - t0
    samples = sampler.samples
    wtime = res.get("write_s", 0) + res.get("wfm_s", 0)

    def at(frac: float) -> int | None:
        if not samples:
            return None
        target_t = frac * elapsed
        return min(samples, key=lambda s: abs(s[0] - target_t))[1]

    out = {
        "block_size": bs, "bytes": res.get("bytes"),
        "write_mbps": res.get("write_mbps"), "read_mbps": res.get("read_mbps"),
        "rss_kib": {
            "before": start_rss,
            "write_start": at(0.02), "write_middle": at(wtime / 2 / elapsed if elapsed else 0),
            "write_end": at(wtime / elapsed if elapsed else 0),
            "read_middle": at((wtime + (elapsed - wtime) / 2) / elapsed if elapsed else 0),
            "end": samples[-1][1] if samples else None,
            "peak": sampler.peak_kib,
        },
        "samples": len(samples),
    }
    if "error" in res:
        out["error"] = res["error"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated block sizes (default 64K,256K,1M; --legacy: "
                         f"{LEGACY_SIZES})")
    ap.add_argument("--legacy", action="store_true",
                    help="the block sizes legacy backup software writes, and the large ones: "
                         "10 KiB (GNU tar), 32 KiB (Amanda), 64,512 B (Bacula), 64 KiB, 256 KiB, 1 MiB")
    ap.add_argument("--data", choices=DATA_KINDS, default="mixed",
                    help="what the client writes: mixed (default; half random, half text, zstd "
                         "~2:1), random (incompressible, as compressed or encrypted backups), "
                         "text (compresses well) or zero")
    ap.add_argument("--mode", choices=["variable", "fixed"], default="variable",
                    help="the drive's block mode: variable (default; one block per WRITE(6), "
                         "as tar, Amanda and Bacula run st) or fixed (MODE SELECT block length, "
                         "WRITE/READ(6) with FIXED set, as after `mt setblk N`)")
    ap.add_argument("--fixed-block", default="0",
                    help="--mode fixed: the block length (default 0: the command's size, one "
                         "block per command; 512: N/512 blocks per command); every size must "
                         "be a multiple of it")
    ap.add_argument("--total", default="2G", help="bytes streamed per block size (default 2G)")
    ap.add_argument("--quick", action="store_true", help="256 MiB per block size")
    ap.add_argument("--long", action="store_true",
                    help="after the table, stream --long-total at --long-size to vtl and "
                         "report the server's RSS at start/middle/end")
    ap.add_argument("--long-total", default="8G")
    ap.add_argument("--long-size", default="256K")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each size N times (alternating target order) and keep the best "
                         "figures: on a shared machine noise only ever slows a run down")
    ap.add_argument("--only", choices=["tgt", "vtl"], help="benchmark one target only")
    ap.add_argument("--media", default=None, help="vtl cartridge media (default: library default)")
    ap.add_argument("--no-verify", action="store_true", help="do not compare read data")
    ap.add_argument("--compression", choices=["on", "off"], default="on",
                    help="vtl's drive compression (default on, as LTO drives ship; off = "
                         "MODE SELECT DCE=0 first, the same work as tgt, which never compresses)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the tape image and library live (default: a temp dir under "
                         ".cache/bench, on the repository's disk - not tmpfs)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--profile", choices=["py-spy", "py-spy-gil", "cprofile"], default=None,
                    help="run vtl serve under a profiler; output in .cache/bench/")
    ap.add_argument("--disk-baseline", action="store_true",
                    help="first time a plain 1 MiB write + fsync of --total bytes in the work dir")
    ap.add_argument("--vtl-src", type=Path, default=None,
                    help="serve vtl from another source tree (PYTHONPATH), to A/B a change")
    ap.add_argument("--streams", type=int, default=0, metavar="N",
                    help="instead of the table: N streams on N drives of one target at once "
                         "(one client each) against one stream, at --streams-size, with the "
                         "server's CPU per GB")
    ap.add_argument("--streams-size", default="256K")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()

    try:
        sizes_text = args.sizes or (LEGACY_SIZES if args.legacy else "64K,256K,1M")
        sizes = [parse_size(s) for s in sizes_text.split(",") if s.strip()]
        total = parse_size("256M" if args.quick else args.total)
        long_total = parse_size(args.long_total)
        long_size = parse_size(args.long_size)
        if args.streams:
            if args.streams < 2:
                raise BenchError("--streams needs at least 2 (it compares with one stream)")
            sizes = [parse_size(args.streams_size)]
        if any(s > 0xFFFFFF for s in sizes):
            raise BenchError("WRITE(6) carries at most 16 MiB - 1 per block")
        global FIXED_BLOCK
        if args.mode == "fixed":
            FIXED_BLOCK = 0 if args.fixed_block.strip() == "0" else parse_size(args.fixed_block)
            if FIXED_BLOCK and any(s % FIXED_BLOCK for s in sizes):
                raise BenchError(f"--fixed-block {args.fixed_block}: every block size must be "
                                 "a multiple of it")
        build_client()
        CACHE.mkdir(parents=True, exist_ok=True)
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
        workdir.mkdir(parents=True, exist_ok=True)
        targets = [args.only] if args.only else ["tgt", "vtl"]
        result = run_all(args, sizes, total, long_total, long_size, workdir, targets)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: all servers stopped", file=sys.stderr)
        return 130
    finally:
        if "workdir" in locals() and not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
    elif args.streams:
        print_streams(result)
    else:
        print_report(result)
    failed = any("error" in r.get(t, {}) for r in result["rows"] for t in targets) or any(
        "error" in r for r in result.get("streams", {}).values())
    return 1 if failed else 0


def mode_text(args: argparse.Namespace) -> str:
    """The drive mode as the report states it."""
    if args.mode != "fixed":
        return "variable mode"
    if FIXED_BLOCK:
        return f"fixed mode, {human(FIXED_BLOCK)} blocks (size / {human(FIXED_BLOCK)} per command)"
    return "fixed mode, one block of the size per command"


def run_all(args: argparse.Namespace, sizes: list[int], total: int, long_total: int,
            long_size: int, workdir: Path, targets: list[str]) -> dict[str, Any]:
    verify = not args.no_verify
    capacity = max(total, long_total if args.long else 0)
    result: dict[str, Any] = {
        "config": {
            "sizes": sizes, "total_per_size": total, "verify": verify, "repeat": args.repeat,
            "workdir": str(workdir), "filesystem": fs_type(workdir),
            "data": DATA_KINDS[args.data],
            "mode": mode_text(args),
            "zstd3_ratio": round(data_ratio(256 << 10, args.data) or 0, 2),
            "vtl_compression": args.compression,
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0],
            "write_mbps": "bytes / (N WRITE(6) + 1 WRITE FILEMARKS(6), non-immediate)",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "streams": args.streams, "streams_size": sizes[0],
        },
        "rows": [],
    }
    timeout = max(600.0, total / 20e6)
    if args.disk_baseline:
        log(f"disk baseline: {human(total)} sequential write + fsync in {workdir}")
        result["config"]["disk_write_mbps"] = round(disk_baseline(workdir, total), 1)
    with contextlib.ExitStack() as stack:
        running_targets: dict[str, Target] = {}
        samplers: dict[str, RssSampler] = {}
        drives = max(1, args.streams)
        if "tgt" in targets:
            running_targets["tgt"] = stack.enter_context(running(
                TgtTarget(workdir, capacity, drives)))
        if "vtl" in targets:
            vtl = VtlTarget(workdir, args.media, args.profile, args.vtl_src, drives)
            try:
                running_targets["vtl"] = stack.enter_context(running(vtl))
            except BenchError as e:
                raise BenchError(f"{e}\n{vtl.tail_log()}") from None
        for name, t in running_targets.items():
            pid = t.pid_for_stats()
            if pid:
                s = RssSampler(pid)
                s.start()
                stack.callback(s.stop)
                samplers[name] = s
        if args.streams:
            result["streams"] = {}
            for rep in range(args.repeat):
                order = list(running_targets.items())
                if rep % 2:
                    order.reverse()
                for name, t in order:
                    result["streams"][name] = best_streams(
                        result["streams"].get(name),
                        measure_streams(t, args.streams, sizes[0], total, verify, timeout,
                                        args.compression == "on" or not t.compresses,
                                        args.data))
            sizes = []  # the streams replace the table
        for bs in sizes:
            row: dict[str, Any] = {"block_size": bs}
            for rep in range(args.repeat):
                # Alternate the order each repetition so neither target always runs first.
                order = list(running_targets.items())
                if rep % 2:
                    order.reverse()
                for name, t in order:
                    res = measure(t, bs, total, verify, timeout, samplers.get(name),
                                  args.compression == "on", args.data)
                    row[name] = best_of(row.get(name), res)
            tg, vt = row.get("tgt"), row.get("vtl")
            if tg and vt and "error" not in tg and "error" not in vt:
                row["ratio_write"] = vt["write_mbps"] / tg["write_mbps"] if tg["write_mbps"] else None
                row["ratio_read"] = vt["read_mbps"] / tg["read_mbps"] if tg["read_mbps"] else None
            result["rows"].append(row)
        result["peak_rss_kib"] = {name: s.peak_kib for name, s in samplers.items()}
        if args.long and "vtl" in running_targets:
            vt = running_targets["vtl"]
            assert isinstance(vt, VtlTarget)
            log(f"long run: {human(long_total)} at {human(long_size)} to vtl")
            result["long"] = long_run(vt, long_total, long_size, verify,
                                      max(1800.0, long_total / 10e6), args.compression == "on", args.data)
        if "vtl" in running_targets:
            vt = running_targets["vtl"]
            assert isinstance(vt, VtlTarget)
            result["vtl_log_tail"] = vt.tail_log(10)
    result["targets"] = targets
    result["config"]["loadavg_end"] = os.getloadavg()[0]
    return result


def disk_baseline(workdir: Path, total: int) -> float:
    """MB/s of a plain sequential 1 MiB write + fsync of `total` bytes in the work dir.

    Why: "400 MB/s where the disk allows" needs to know what the disk allows; a target
    that compresses 2:1 may exceed this figure, one that stores raw bytes cannot.
    """
    path = workdir / "disk-baseline.bin"
    buf = os.urandom(1 << 20)
    t0 = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(max(1, total >> 20)):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.monotonic() - t0
    path.unlink()
    return max(1, total >> 20) * (1 << 20) / 1e6 / elapsed


def fs_type(path: Path) -> str:
    """The filesystem type under `path` (so a tmpfs run is visible in the report)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


def print_report(result: dict[str, Any]) -> None:
    cfg = result["config"]
    targets = result["targets"]
    rep = cfg.get("repeat", 1)
    print(f"\nStream in {cfg.get('mode', 'variable mode')}, one command at a time "
          f"(libiscsi), {human(cfg['total_per_size'])} "
          f"per block size, verify={'on' if cfg['verify'] else 'off'}"
          + (f", best of {rep} runs" if rep > 1 else ""))
    print(f"work dir {cfg['workdir']} ({cfg['filesystem']}); data: {cfg['data']} "
          f"(zstd-3 ratio {cfg['zstd3_ratio']}); {cfg['cpus']} CPUs, "
          f"load {cfg['loadavg_start']:.1f} -> {cfg['loadavg_end']:.1f}")
    print(f"write MB/s = {cfg['write_mbps']}; MB = 10^6 bytes; vtl drive compression "
          f"{cfg.get('vtl_compression', 'on')} (tgt never compresses)")
    if "disk_write_mbps" in cfg:
        print(f"disk baseline: plain sequential write + fsync {cfg['disk_write_mbps']:.0f} MB/s")
    print()
    print(fmt_table(result["rows"], targets))
    print("\nserver CPU seconds per GB (user+sys, all threads; load-independent cost):")
    for r in result["rows"]:
        parts = []
        for t in targets:
            res = r.get(t, {})
            w, rd = res.get("server_cpu_s_per_gb_write"), res.get("server_cpu_s_per_gb_read")
            if w is not None:
                parts.append(f"{t} write {w:.2f} read {rd if rd is not None else float('nan'):.2f}")
        tg, vt = r.get("tgt", {}), r.get("vtl", {})
        if tg.get("server_cpu_s_per_gb_write") and vt.get("server_cpu_s_per_gb_write"):
            ratio = vt["server_cpu_s_per_gb_write"] / tg["server_cpu_s_per_gb_write"]
            parts.append(f"vtl/tgt write {ratio:.2f}")
            if tg.get("server_cpu_s_per_gb_read") and vt.get("server_cpu_s_per_gb_read"):
                parts.append(f"read {vt['server_cpu_s_per_gb_read'] / tg['server_cpu_s_per_gb_read']:.2f}")
        print(f"  {human(r['block_size']):>8}: " + "; ".join(parts))
    print("\nserver context switches per command, voluntary/involuntary, each run (MB/s): "
          "mostly voluntary = the server slept\nuntil each command (client on the other vCPU, "
          "a cross-vCPU wake-up each way), mostly involuntary = the client it woke\npreempted "
          "it (both on one vCPU); the placement, not the code, sets a small block's MB/s:")
    for r in result["rows"]:
        parts = []
        for t in targets:
            res = r.get(t, {})
            if "server_switches_write" not in res:
                continue
            cells = []
            for run in res.get("each_run", [_run_summary(res)]):
                ws, rs = run.get("server_switches_write"), run.get("server_switches_read")
                cell = f"write {ws[0]:.2f}/{ws[1]:.2f} ({run['write_mbps']:.0f})"
                if rs:
                    cell += f" read {rs[0]:.2f}/{rs[1]:.2f} ({run['read_mbps']:.0f})"
                cells.append(cell)
            parts.append(f"{t} " + ", ".join(cells))
        if parts:
            print(f"  {human(r['block_size']):>8}: " + "; ".join(parts))
    for r in result["rows"]:
        for t in targets:
            if "error" in r.get(t, {}):
                print(f"  {t} {human(r['block_size'])}: {r[t]['error']}")
    if result.get("peak_rss_kib"):
        print("\npeak resident memory during the table: " + ", ".join(
            f"{k} {v / 1024:.1f} MiB" for k, v in result["peak_rss_kib"].items()))
    if "long" in result:
        lg = result["long"]
        rss = lg["rss_kib"]

        def mib(v: int | None) -> str:
            return "-" if v is None else f"{v / 1024:.1f}"

        print(f"\nlong run, vtl, {human(lg['bytes'] or 0)} at {human(lg['block_size'])}: "
              f"write {lg['write_mbps'] or 0:.0f} MB/s, read {lg['read_mbps'] or 0:.0f} MB/s")
        print("  vtl serve RSS MiB: " + ", ".join(
            f"{k} {mib(rss[k])}" for k in ("before", "write_start", "write_middle", "write_end",
                                           "read_middle", "end", "peak")))
        if "error" in lg:
            print(f"  error: {lg['error']}")


if __name__ == "__main__":
    sys.exit(main())
