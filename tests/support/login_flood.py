"""Connections opened as fast as one process can and left half-logged-in.

Run as a process of its own (``python login_flood.py PORT TARGET SECONDS HELD``): for
SECONDS it opens connections and sends each the first Login Request of a normal session
(security stage, no transit), never reading the answer nor sending the next one; it keeps
the HELD most recent open (closing the oldest) and prints how many it opened.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import deque

from vtl.iscsi import pdu
from vtl.iscsi.login import encode_keys
from vtl.iscsi.pdu import Op


def first_login(k: int, target: str) -> bytes:
    keys = encode_keys([("InitiatorName", f"iqn.2026-11.org.vtl-ebm:half{k % 1000}"),
                        ("SessionType", "Normal"), ("TargetName", target),
                        ("AuthMethod", "None")])
    bhs = pdu.encode_layout(Op.LOGIN_REQ, immediate=True, dsl=len(keys), flags=0x01,
                            isid=bytes([0x80, 0, 0, 0, 0x40, k & 0xFF]), tsih=0, itt=k,
                            cid=1, cmdsn=1, expstatsn=0)
    return bhs + keys + b"\0" * pdu.pad_len(len(keys))


def flood(port: int, target: str, seconds: float, held: int) -> int:
    opened = 0
    socks: deque[socket.socket] = deque()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            s.sendall(first_login(opened, target))
        except OSError:  # refused, reset or timed out under the flood: try again
            time.sleep(0.001)
            continue
        opened += 1
        socks.append(s)
        while len(socks) > held:
            socks.popleft().close()
    for s in socks:
        s.close()
    return opened


if __name__ == "__main__":
    port, target, seconds, held = sys.argv[1:5]
    print(flood(int(port), target, float(seconds), int(held)), flush=True)
