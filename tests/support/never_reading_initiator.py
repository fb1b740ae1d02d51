"""An initiator that logs in and floods INQUIRYs without ever reading its socket (or, given
READ_RATE bytes per second, reading it that slowly: a slow reader rather than a non-reader).

Run as a process of its own (``python never_reading_initiator.py PORT TARGET K IMMEDIATE
SECONDS [READ_RATE]``) so that the test measuring another initiator's latency does not share a GIL and
a scheduler slice with the attackers' send loops: what the test then measures is the
server, not its own process. Prints the number of commands sent.
"""

from __future__ import annotations

import struct
import sys
import threading
import time

from iscsi_support import RawInitiator

from vtl.iscsi import pdu
from vtl.iscsi.pdu import Op

INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
BURST = 200_000  # commands in one buffer, sent round and round


def commands(ini: RawInitiator, count: int, immediate: bool) -> bytes:
    """``count`` INQUIRYs to LUN 0 with rising CmdSN (or all immediate), as one buffer."""
    first = 0x40 if immediate else 0
    out = bytearray()
    lun = pdu.encode_lun(0)
    for i in range(count):
        cmdsn = ini.cmdsn if immediate else ini.cmdsn + i
        out += struct.pack(">BBBBI8sIIII16s", Op.SCSI_CMD | first, 0xC0, 0, 0, 0, lun,
                           0x1000 + i, 96, cmdsn & 0xFFFFFFFF, ini.expstatsn,
                           INQUIRY.ljust(16, b"\0"))
    return bytes(out)


def read_slowly(ini: RawInitiator, rate: int, stop: threading.Event) -> None:
    """Read ``rate`` bytes a second from the socket, a hundredth of it every 10 ms."""
    while not stop.wait(0.01):
        try:
            ini.sock.recv(max(1, rate // 100))
        except TimeoutError:
            continue
        except OSError:
            return


def flood(port: int, target: str, k: int, immediate: bool, seconds: float,
          read_rate: int = 0) -> int:
    """Log in, then send INQUIRYs for ``seconds`` without reading a byte (or reading
    ``read_rate`` bytes a second); commands sent."""
    ini = RawInitiator(port, name=f"iqn.2026-11.org.vtl-ebm:hostile{k}",
                       isid=bytes([0x80, 0, 0, 0, 0x10, k]))
    ini.login(target=target)
    stop = threading.Event()
    if read_rate:
        threading.Thread(target=read_slowly, args=(ini, read_rate, stop), daemon=True).start()
    view = memoryview(commands(ini, BURST, immediate))
    ini.sock.settimeout(0.2)
    total = off = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                n = ini.sock.send(view[off:off + 65536])
            except TimeoutError:  # the server stopped reading us: back-pressure
                continue
            off += n
            total += n
            if off == len(view):
                off = 0  # the same CmdSNs again: stale, dropped
    except OSError:
        pass
    stop.set()
    ini.close()
    return total // 48


if __name__ == "__main__":
    port, target, k, immediate, seconds = sys.argv[1:6]
    rate = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    print(flood(int(port), target, int(k), immediate == "1", float(seconds), rate), flush=True)
