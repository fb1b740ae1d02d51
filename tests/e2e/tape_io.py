"""Tape I/O inside the LIO guest, one client for both ways in: the kernel (SG_IO on a
tcm_loop sg node, so LIO and the TCMU ring) and ``vtl serve`` (the project's iSCSI initiator).

Run by the venv's Python in the guest of tests/e2e/test_linux_lio.py and bench/bench_lio.py
(it imports nothing from the tests, so it runs as a plain script). One session, then the
operations in order, separated by ``+``; DRIVE is the drive's index (LUN DRIVE+1 on
``vtl serve``; a sg node is one device, so the index is not used there)::

    tape_io.py iscsi:127.0.0.1:3261/IQN load A00002L8 0 + read 0 2   # tag -> drive 0; 2 files
    tape_io.py sg:/dev/sg2 write 0 65536:/tmp/f0 10240:/tmp/f1         # a filemark after each
    tape_io.py iscsi:127.0.0.1:3261/IQN unload 0                      # to the slot it came from
    tape_io.py sg:/dev/sg2 bench 0 5 65536 10240           # commands/s and MB/s, one JSON line

The same client code (``ebm.remote.scsi_client``) runs over both transports, so a difference
in the figures is the transport and the target, not the client.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from ebm.remote.initiator import Initiator
from ebm.remote.kernel_devices import SgTransport
from ebm.remote.scsi_client import ChangerDevice, ElementType, Kind, TapeDevice

MAX_BLOCK = 1 << 20
WRITE_BUDGET = 48 << 20  # per block size in a bench: fits the cartridges the bench makes


def transport(spec: str):
    """``sg:/dev/sgN`` or ``iscsi:HOST:PORT/IQN``."""
    kind, _, rest = spec.partition(":")
    if kind == "sg":
        return SgTransport(rest)
    portal, _, iqn = rest.partition("/")
    host, _, port = portal.rpartition(":")
    return Initiator(host, int(port), iqn, initiator_name="iqn.2026-12.org.vtl-ebm:tape-io",
                     timeout=600).connect()


def write(tape: TapeDevice, files: list[str]) -> None:
    """From BOT, each ``BLOCK:PATH`` as one tape file of BLOCK-byte blocks."""
    tape.prepare()
    tape.rewind()
    for i, spec in enumerate(files):
        size, _, path = spec.partition(":")
        block = int(size)
        with open(path, "rb") as f:
            data = f.read()
        for pos in range(0, len(data), block):
            tape.write(data[pos:pos + block])
        tape.write_filemarks(1)
        print(f"file {i} sha256 {hashlib.sha256(data).hexdigest()}", flush=True)


def read(tape: TapeDevice, files: int) -> None:
    tape.prepare()
    tape.rewind()
    for i in range(files):
        digest, blocks = hashlib.sha256(), 0
        while (got := tape.read(MAX_BLOCK)).kind == Kind.DATA:
            digest.update(got.data)
            blocks += 1
        print(f"file {i} blocks {blocks} sha256 {digest.hexdigest()} end {got.kind.name}",
              flush=True)


def move(changer: ChangerDevice, barcode: str | None, drive: int) -> None:
    """Load the cartridge ``barcode`` into drive ``drive``, or (barcode None) unload it."""
    elements = changer.elements()
    picker = next(e for e in elements if e.type == ElementType.MEDIUM_TRANSPORT)
    bay = [e for e in elements if e.type == ElementType.DATA_TRANSFER][drive]
    if barcode is None:
        changer.move(picker.address, bay.address, bay.source)
    else:
        slot = next(e for e in elements if e.barcode == barcode)
        changer.move(picker.address, slot.address, bay.address)


def bench(tape: TapeDevice, seconds: float, blocks: list[int]) -> None:
    """TEST UNIT READY for ``seconds`` (commands/s), then ~``seconds`` of WRITEs per block
    size from BOT, at most WRITE_BUDGET bytes (MB/s, the filemark's sync included)."""
    tape.prepare()
    out: dict[str, float] = {}
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        tape.test_unit_ready()
        n += 1
    out["tur_per_s"] = n / (time.monotonic() - start)
    for size in blocks:
        tape.rewind()
        data = os.urandom(size)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds and (n + 1) * size <= WRITE_BUDGET:
            tape.write(data)
            n += 1
        tape.write_filemarks(1)
        took = time.monotonic() - start
        out[f"write_{size}_mb_s"] = n * size / took / 1e6
        out[f"write_{size}_per_s"] = n / took
    print(json.dumps(out), flush=True)


def run(t, op: str, args: list[str]) -> None:
    """One operation; LUN 0 is the changer, LUN DRIVE+1 the drive (a sg node ignores it)."""
    if op in ("load", "unload"):
        move(ChangerDevice(t, 0, "changer"), args[0] if op == "load" else None, int(args[-1]))
        return
    tape = TapeDevice(t, int(args[0]) + 1, f"drive{args[0]}")
    if op == "write":
        write(tape, args[1:])
    elif op == "read":
        read(tape, int(args[1]))
    elif op == "bench":
        bench(tape, float(args[1]), [int(a) for a in args[2:]])
    else:
        raise SystemExit(f"tape_io: unknown operation {op!r}")


def main(argv: list[str]) -> int:
    spec, *rest = argv
    t = transport(spec)
    try:
        while rest:
            n = rest.index("+") if "+" in rest else len(rest)
            run(t, rest[0], rest[1:n])
            rest = rest[n + 1:]
    finally:
        t.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
