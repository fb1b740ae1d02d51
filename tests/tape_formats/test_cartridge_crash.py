"""Crash safety: a writer killed with SIGKILL mid-stream, many times, loses nothing durable.

The writer appends deterministic blocks (content derived from the object number) and reports
each durable point (a filemark written without IMMED) on stdout. After every kill the
cartridge must reopen, hold at least everything up to the last reported durable point, and
every object on it must read back exactly, whole or not at all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from crash_check import check_tape

from tape_formats.cartridge import RecordKind, TapeCartridge, verify_cartridge
from tape_formats.media import MEDIA

WRITER = r"""
import hashlib, sys
from pathlib import Path
from tape_formats.cartridge import TapeCartridge
c = TapeCartridge.open(Path(sys.argv[1]))
c.space_to_eod()
every = int(sys.argv[2])
print("ready", flush=True)
while True:
    obj = c.position
    if obj % every == every - 1:
        c.write_filemarks(1)
        print("durable", c.position, flush=True)
    else:
        seed = hashlib.sha256(obj.to_bytes(8, "little")).digest()
        size = 1000 + int.from_bytes(seed[:2], "little") * 4
        c.write_block((seed * (size // 32 + 1))[:size], compress=obj % 3 == 0)
"""


def expected_block(obj: int) -> bytes:
    import hashlib

    seed = hashlib.sha256(obj.to_bytes(8, "little")).digest()
    size = 1000 + int.from_bytes(seed[:2], "little") * 4
    return (seed * (size // 32 + 1))[:size]


def check_cartridge(path: Path, every: int) -> int:
    return check_tape(path, every, expected_block)


def test_sigkill_many_times_loses_nothing_durable(tmp_path: Path) -> None:
    path = tmp_path / "K00001L8.vtape"
    TapeCartridge.create(path, "K00001L8", MEDIA["LTO-8"])
    rng = random.Random(7)
    every = 17
    durable = 0
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for _round in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(every)],
            stdout=subprocess.PIPE,
            env=env,
        )
        # Kill at a random moment after the writer is writing, however loaded the machine is.
        assert proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        os.set_blocking(proc.stdout.fileno(), False)
        out = b""
        while time.monotonic() < deadline:
            out += proc.stdout.read() or b""
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out += proc.stdout.read() or b""
        for line in out.decode().splitlines():
            if line.startswith("durable "):
                durable = max(durable, int(line.split()[1]))
        eod = check_cartridge(path, every)
        assert eod >= durable
    assert durable > 0
    assert verify_cartridge(path).ok


def test_torn_tail_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "T00001L8.vtape"
    TapeCartridge.create(path, "T00001L8", MEDIA["LTO-8"])
    with TapeCartridge.open(path) as c:
        for i in range(5):
            c.write_block(bytes([i]) * 3000, compress=False)
        c.write_filemarks(1)
        c.write_block(b"z" * 3000, compress=False)  # not durable
    good = path.stat().st_size
    # A crash in the middle of the next record: its header and half its payload made it.
    with TapeCartridge.open(path) as c:
        c.space_to_eod()
        c.write_block(b"q" * 3000, compress=False)
        c.sync()
    with open(path, "r+b") as f:
        f.truncate(good + 32 + 1000)
    with TapeCartridge.open(path) as c:
        assert c.eod == 7
        c.locate(6)
        assert bytes(c.read_block().data) == b"z" * 3000
        assert c.read_block().kind is RecordKind.EOD
    assert path.stat().st_size == good
    assert verify_cartridge(path).ok
