"""Crash safety of the dedup store: writers that overwrite (dropping chunks) and a garbage
collector (sweeping the index, compacting packs, merging the small packs each killed
writer leaves), all killed with SIGKILL at random moments
many times, lose no chunk that a cartridge still references and nothing a cartridge
acknowledged as durable.

Two cartridges get the same deterministic blocks (so they share chunks), each writer now
and then locates back to an earlier point and rewrites from there (the erase/relabel case:
chunks lose their last reference and come back), while a collector sweeps in a loop. After
every round each cartridge must open, hold at least its last durable point, and read back
every object exactly.
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

from tape_formats.cartridge import TapeCartridge, verify_cartridge
from tape_formats.media import MEDIA
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.gc import collect, stats

EVERY = 7  # every 7th object is a filemark (a durable point)

WRITER = r"""
import random, sys
from pathlib import Path
from tape_formats.cartridge import TapeCartridge
every, seed = int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
c = TapeCartridge.open(Path(sys.argv[1]))
c.space_to_eod()
print("ready", flush=True)
while True:
    obj = c.position
    if obj > every and rng.random() < 0.04:
        back = rng.randrange(0, obj)
        back -= back % every  # a file's start: rewrite from there
        print("erasing", back, flush=True)  # a crash during the erase may cut to here
        c.locate(back)
        c.erase()
    elif obj % every == every - 1:
        c.write_filemarks(1)
        print("durable", c.position, flush=True)
    else:
        r = random.Random(obj)
        c.write_block(r.randbytes(r.randrange(2000, 90000)))
"""

COLLECTOR = r"""
import sys
from pathlib import Path
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.gc import collect
store = ChunkStore(Path(sys.argv[1]))
print("ready", flush=True)
while True:
    report = collect(store, Path(sys.argv[2]), timeout=60)
    if report.packs_compacted:
        print("compacted", "merged" if report.packs_merged else "", flush=True)
"""


def expected_block(obj: int) -> bytes:
    r = random.Random(obj)
    return r.randbytes(r.randrange(2000, 90000))


def check_cartridge(path: Path) -> int:
    return check_tape(path, EVERY, expected_block)


def _start(script: str, *args: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            env=env)
    assert proc.stdout.readline() == b"ready\n"
    os.set_blocking(proc.stdout.fileno(), False)
    return proc


def test_sigkill_writers_and_collector_lose_no_referenced_chunk(tmp_path: Path) -> None:
    carts = tmp_path / "cartridges"
    carts.mkdir()
    store_root = tmp_path / "store"
    paths = [carts / f"K0000{i}L8.vtape" for i in (1, 2)]
    for p in paths:
        TapeCartridge.create(p, p.name[:8], MEDIA["LTO-8"], chunk_store=store_root)
    rng = random.Random(11)
    durable = dict.fromkeys(paths, 0)
    points = 0  # durable points reached, all rounds and cartridges
    compactions = merges = 0  # merges: runs that merged the small packs killed writers left
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for round_no in range(10):
        procs = {p: _start(WRITER, str(p), str(EVERY), str(round_no), env=env) for p in paths}
        gc = _start(COLLECTOR, str(store_root), str(carts), env=env)
        outs = {p: b"" for p in paths}
        deadline = time.monotonic() + rng.uniform(0.1, 0.4)
        while time.monotonic() < deadline:
            for p, proc in procs.items():
                outs[p] += proc.stdout.read() or b""
            time.sleep(0.01)
        victims = [*procs.values(), gc]
        rng.shuffle(victims)
        for proc in victims:  # in a random order, a moment apart
            proc.send_signal(signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.03))
        for p, proc in procs.items():
            proc.wait()
            outs[p] += proc.stdout.read() or b""
        gc.wait()
        said = gc.stdout.read() or b""
        compactions += said.count(b"compacted")
        merges += said.count(b"merged")
        for p in paths:
            # whole lines only: with PYTHONUNBUFFERED each piece of a print is a write of
            # its own, and a kill between two leaves a line cut short (not yet said)
            for line in outs[p].decode().split("\n")[:-1]:
                word, _, n = line.partition(" ")
                if word == "durable":
                    durable[p] = max(durable[p], int(n))
                    points += 1
                elif word == "erasing":  # only what precedes is sure to stay
                    durable[p] = int(n)
            assert check_cartridge(p) >= durable[p]
    assert points > 0  # (a cartridge may end erased back to BOP)
    for p in paths:
        assert verify_cartridge(p).ok
    # A last sweep after the dust settles frees only what no cartridge needs.
    last = collect(ChunkStore(store_root), carts, timeout=5)
    compactions += last.packs_compacted
    merges += bool(last.packs_merged)
    print(f"{points} durable points, {compactions} compaction runs seen, {merges} merging")
    assert compactions > 0 and merges > 0
    for p in paths:
        check_cartridge(p)
    s = stats(ChunkStore(store_root), carts)
    assert s.stored_chunks == s.chunks  # every referenced chunk is there, and nothing else
