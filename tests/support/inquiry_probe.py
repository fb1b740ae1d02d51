"""A well-behaved initiator measuring how long the target takes to answer it.

Run as a process of its own (``python inquiry_probe.py PORT TARGET SECONDS``) so that what
it measures is the server, not a GIL and scheduler slice shared with the test's other
threads: it logs in, prints ``ready``, waits for a line on stdin, then sends one INQUIRY to
LUN 0 every 50 ms for SECONDS and prints the latencies (seconds, JSON list) on one line.
"""

from __future__ import annotations

import json
import sys
import time

from iscsi_support import RawInitiator, scsi_status

INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
GOOD = "iqn.2026-11.org.vtl-ebm:good"


def probe(port: int, target: str, seconds: float) -> list[float]:
    ini = RawInitiator(port, name=GOOD, isid=b"\x80\0\0\0\x20\x01", timeout=30.0)
    ini.login(target=target)
    print("ready", flush=True)
    sys.stdin.readline()
    took: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        rsp, data = ini.collect(ini.scsi(INQUIRY, lun=0, read=96))
        took.append(time.monotonic() - t0)
        assert scsi_status(rsp) == 0 and data[8:11] == b"IBM"
        time.sleep(0.05)
    ini.logout()
    ini.close()
    return took


if __name__ == "__main__":
    port, target, seconds = sys.argv[1:4]
    print(json.dumps(probe(int(port), target, float(seconds))), flush=True)
