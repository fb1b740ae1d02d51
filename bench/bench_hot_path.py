"""The server's own cost per READ(6)/WRITE(6), without the network.

A fake socket feeds pre-built SCSI Command PDUs to ``Connection._serve`` on this thread, one
at a time (the next only after the previous response, as Linux st does), against a real
library, drive model and cartridge. What is left is the interpreter, zstd, crc32c and pread:
the part of a command vtl can make cheaper, measured without a second process to disturb it.

    .venv/bin/python bench/bench_hot_path.py                  # us per command, 64 KiB
    .venv/bin/python bench/bench_hot_path.py --block-size 256K
    .venv/bin/python bench/bench_hot_path.py --callgrind      # instructions per WRITE and READ
    .venv/bin/python bench/bench_hot_path.py --callgrind --block-size 256K --at-once
                                          # the four-stream WRITE (stored on its own thread)

``--callgrind`` runs the script three times under valgrind (100 or 600 writes, then 100 or
600 reads) and prints the differences per WRITE and per READ: counts that do not depend on the
machine's load, for A/B comparisons of hot-path changes (needs Debian's valgrind; the
kernel's share, syscalls included, is not counted). ``--data random|text`` changes what the
blocks hold (default: half compressible, like bench_drive.py's ``mixed``). The C fast paths
(vtl._fastpath) serve when built; ``VTL_NO_FASTPATH=1`` in the environment measures the
pure-Python ones (A/B in one checkout).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vtl.config import LibraryConfig  # noqa: E402
from vtl.iscsi import pdu  # noqa: E402
from vtl.iscsi.config import Limits, ServerConfig, TargetConfig  # noqa: E402
from vtl.iscsi.connection import Connection  # noqa: E402
from vtl.iscsi.target import IscsiTarget  # noqa: E402
from vtl.library import Library  # noqa: E402
from vtl.scsi.devices import build_device_set  # noqa: E402

IQN = "iqn.2026-11.org.vtl-ebm:hot-path"
_SCSI_CMD = __import__("struct").Struct(">BBBB4s8sIIII16s")


class OneAtATimeSocket:
    """Serves the next PDU only once the previous one has been answered (cheaply: the
    harness must cost little next to what it measures)."""

    def __init__(self, stream: bytes, setup_pdus: int = 0) -> None:
        self.inp = memoryview(stream)
        self.pos = 0
        self.sent = 0
        self.pdus = 0
        self.responses = 0
        self.setup_pdus = setup_pdus
        self.started = 0.0  # when the first measured PDU was handed out
        # A real socket that nobody writes to, for the connection's unread-output check
        # (framing.py _await_reader asks SIOCOUTQ of our fileno: always 0 here).
        self._idle = socket.socketpair()

    def fileno(self) -> int:
        return self._idle[0].fileno()

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        n = len(view)
        if n == pdu.BHS_LEN:
            if self.responses < self.pdus:  # answered by a LUN worker: wait for it
                deadline = time.monotonic() + 10
                while self.responses < self.pdus and time.monotonic() < deadline:
                    time.sleep(0.0005)
            if self.pdus == self.setup_pdus:
                self.started = time.perf_counter()
            self.pdus += 1
        pos = self.pos
        n = min(n, len(self.inp) - pos)
        view[:n] = self.inp[pos:pos + n]
        self.pos = pos + n
        return n

    def sendmsg(self, frames: list, ancdata: object = (), flags: int = 0) -> int:
        n = 0
        for f in frames:
            n += len(f)
        self.sent += n
        self.responses += 1
        return n

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 3260)

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        for s in self._idle:
            s.close()


def command(itt: int, cdb: bytes, *, read: int = 0, data: bytes = b"") -> bytes:
    flags = 0x80 | (0x40 if read else 0) | (0x20 if data else 0)
    bhs = _SCSI_CMD.pack(0x01, flags, 0, 0, len(data).to_bytes(4, "big"), pdu.encode_lun(1),
                         itt, read or len(data), itt + 1, 0, cdb.ljust(16, b"\0"))
    return bhs + data + bytes(-len(data) & 3)


def half_compressible(size: int) -> bytes:
    """Like the benchmark client's data: 4 KiB of random bytes, 4 KiB of log lines, ..."""
    rnd = random.Random(1)
    out = []
    for k in range(size // 4096 + 1):
        if k % 2 == 0:
            out.append(rnd.randbytes(4096))
        else:
            line = b"2026-11-25T14:00:00 host backup[4000]: wrote block %06d ok\n" % k
            out.append((line * 80)[:4096])
    return b"".join(out)[:size]


def block_data(kind: str, size: int) -> bytes:
    """One block as the drive benchmark writes it: ``mixed`` (half compressible), ``random``
    (incompressible, as compressed or encrypted backups) or ``text`` (compresses well)."""
    if kind == "random":
        return random.Random(2).randbytes(size)
    if kind == "text":
        line = b"2026-11-25T14:00:00 host backup[4000]: wrote block 000001 ok\n"
        return (line * (size // len(line) + 1))[:size]
    return half_compressible(size)


def serve(server: IscsiTarget, target: TargetConfig, stream: bytes, setup_pdus: int) -> float:
    """Seconds from the first PDU after the ``setup_pdus`` (TEST UNIT READY, REWIND: they
    run on the LUN's worker and the harness polls for their answers) to the end."""
    sock = OneAtATimeSocket(stream, setup_pdus)
    conn = Connection(server, sock)  # type: ignore[arg-type]
    login = conn.login
    login.initiator_name = "iqn.2026-11.org.vtl-ebm:bench"
    login.target = target
    p = login.params
    p.max_xmit_dsl, p.max_burst, p.first_burst = 262144, 16776192, 262144
    p.immediate_data, p.initial_r2t = True, False
    conn.session = server.open_session(conn, login, b"\x80\0\0\0\0\1", 1)
    conn.full_feature = True
    conn._max_dsl = p.max_recv_dsl
    conn.bind_luns(target, conn.session.luns)
    conn._serve()
    return time.perf_counter() - sock.started


def measure(block: int, writes: int, reads: int, kind: str = "mixed", fixed: int | None = None
            ) -> tuple[float, float]:
    (REPO / ".cache").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hot-path-", dir=REPO / ".cache"))
    try:
        lib = Library.create(work / "lib", LibraryConfig(drives=1, slots=4, mailslots=1))
        lib.create_cartridge("H00001L8")
        lib.load("H00001L8", 0)
        target = TargetConfig(IQN, build_device_set(lib))
        server = IscsiTarget(ServerConfig([target], portals=[("127.0.0.1", 0)],
                                          limits=Limits(nop_interval=0)))
        start = [command(i, bytes(6)) for i in range(3)]  # TEST UNIT READY: clears the UA
        start.append(command(3, bytes([0x01, 0, 0, 0, 0, 0])))  # REWIND
        data = block_data(kind, block)
        size = block.to_bytes(3, "big")
        wflags, rflags = b"\0", b"\2"  # variable mode; READ with SILI
        if fixed is not None:  # MODE SELECT(6): block length (the command's size if 0)
            length = fixed or block
            start.append(command(4, bytes([0x15, 0x10, 0, 0, 12, 0]),
                                 data=bytes([0, 0, 0x10, 8, 0, 0, 0, 0]) + length.to_bytes(4, "big")))
            size = (block // length).to_bytes(3, "big")
            wflags, rflags = b"\1", b"\1"
        first = len(start)
        w = serve(server, target, b"".join(
            start + [command(first + i, b"\x0a" + wflags + size + b"\0", data=data)
                     for i in range(writes)]), len(start))
        settle = time.perf_counter()  # buffered mode: count the blocks still being stored
        cart = lib.drives[0].cartridge
        if cart is not None:
            cart.wait_writes()
        w += time.perf_counter() - settle
        r = serve(server, target, b"".join(
            start[:4] + [command(4 + i, b"\x08" + rflags + size + b"\0", read=block)
                         for i in range(reads)]), 4)
        lib.close()
        return w / writes * 1e6, r / max(reads, 1) * 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)


def callgrind(block: int, kind: str, fixed: int | None = None, at_once: bool = False
              ) -> tuple[int, int]:
    """Instructions per WRITE and per READ: three runs under valgrind (100 writes and 100
    reads, 600 and 100, 600 and 600), the differences divided by the 500 extra commands."""
    counts = {}
    for writes, reads in ((100, 100), (600, 100), (600, 600)):
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--block-size", str(block), "--count", str(writes), "--reads",
             str(reads), "--data", kind]
            + ([] if fixed is None else ["--fixed-block", str(fixed)])
            + (["--at-once"] if at_once else []),
            capture_output=True, text=True, check=True)
        m = re.search(r"Collected : (\d+)", r.stderr)
        if m is None:
            raise SystemExit("callgrind printed no total")
        counts[writes, reads] = int(m.group(1))
    return ((counts[600, 100] - counts[100, 100]) // 500,
            (counts[600, 600] - counts[600, 100]) // 500)


def size_arg(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1 << 20}.get(text[-1:], 1)
    return int(text.rstrip("KM")) * mult


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block-size", type=size_arg, default=65536)
    ap.add_argument("--count", type=int, default=4096, help="blocks written")
    ap.add_argument("--reads", type=int, default=None, help="blocks read (default: all)")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per WRITE and READ under valgrind (repeatable under load)")
    ap.add_argument("--data", choices=("mixed", "random", "text"), default="mixed",
                    help="what the blocks hold (bench_drive.py's --data)")
    ap.add_argument("--fixed-block", type=int, default=None,
                    help="fixed-block mode (bench_drive.py's --mode fixed --fixed-block N)")
    ap.add_argument("--at-once", action="store_true",
                    help="big blocks written on the command's thread, as while twice as many "
                         "drives stream as there are CPUs (vtl/scsi/ssc_streams.py): the "
                         "four-stream path on two CPUs")
    args = ap.parse_args()
    if args.at_once:
        from vtl.scsi.ssc_streams import WRITE_STREAMS
        WRITE_STREAMS.enough = 1  # this one drive counts as enough streams
    if args.callgrind:
        if shutil.which("valgrind") is None:
            print("error: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
        per_write, per_read = callgrind(args.block_size, args.data, args.fixed_block,
                                        args.at_once)
        print(f"{per_write} instructions per WRITE(6), {per_read} per READ(6) of "
              f"{args.block_size} bytes, {args.data} data (server side, no network)")
        return 0
    reads = args.count if args.reads is None else min(args.reads, args.count)
    w, r = measure(args.block_size, args.count, reads, args.data, args.fixed_block)
    print(f"{args.block_size >> 10} KiB {args.data}: WRITE(6) {w:.1f} us, READ(6) {r:.1f} us per command "
          f"(server side, no network; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
