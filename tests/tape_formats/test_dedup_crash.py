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

The loop once lost a chunk in CI: a process killed inside an index commit (docs/store-format.md,
"A commit in flight"). Two tests below kill the collector, and a writer, at that exact point
of each of their commits in turn.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_check import check_tape

from tape_formats.cartridge import TapeCartridge, verify_cartridge
from tape_formats.media import MEDIA
from tape_formats.store.chunk_index import INDEX_NAME
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.gc import collect, stats

EVERY = 7  # every 7th object is a filemark (a durable point)
# A harsher run by hand: DEDUP_CRASH_ROUNDS=200 DEDUP_CRASH_SEED=5 (several copies at once
# under load find rare windows; the CI run keeps 10 rounds).
ROUNDS = int(os.environ.get("DEDUP_CRASH_ROUNDS", "10"))
SEED = int(os.environ.get("DEDUP_CRASH_SEED", "11"))

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
    rng = random.Random(SEED)
    durable = dict.fromkeys(paths, 0)
    points = 0  # durable points reached, all rounds and cartridges
    compactions = merges = 0  # merges: runs that merged the small packs killed writers left
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    round_no = 0
    # Past ROUNDS (up to four times as many) until a collection has merged the small packs
    # that killed writers leave: under load the collector gets the lock less often, and a
    # run of ROUNDS may see no merge at all.
    while round_no < ROUNDS or (not merges and round_no < 4 * ROUNDS):
        round_no += 1
        seed = str(round_no - 1 + 1000 * (SEED != 11) * SEED)
        procs = {p: _start(WRITER, str(p), str(EVERY), seed, env=env) for p in paths}
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


HITTER = r"""
import random, sys
from pathlib import Path
from tape_formats.cartridge import TapeCartridge
c = TapeCartridge.open(Path(sys.argv[1]))  # the store's index is open from here
print("ready", flush=True)
sys.stdin.readline()
for obj in range(int(sys.argv[2]) - 1):
    r = random.Random(obj)
    c.write_block(r.randbytes(r.randrange(2000, 90000)))
c.write_filemarks(1)
print("durable", flush=True)
sys.stdin.readline()  # killed here: no clean close of the index
"""

COLLECT_ONCE = r"""
import sys
from pathlib import Path
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.gc import collect
collect(ChunkStore(Path(sys.argv[1])), Path(sys.argv[2]), timeout=60)
"""


def _shim(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The kill-at-WAL-sync shim, built, and an environment whose Python children import
    this checkout."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    src = Path(__file__).resolve().parents[1] / "support" / "kill_at_wal_sync.c"
    out = tmp_path / "kill_at_wal_sync.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src), "-ldl"], check=True)
    return out, dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))


def _two_cartridges(base: Path) -> tuple[Path, Path, Path, Path]:
    """(cartridge folder, store, A, B): two new dedup cartridges on one new store."""
    carts = base / "cartridges"
    carts.mkdir(parents=True)
    store_root = base / "store"
    a, b = carts / "K00001L8.vtape", carts / "K00002L8.vtape"
    for p in (a, b):
        TapeCartridge.create(p, p.name[:8], MEDIA["LTO-8"], chunk_store=store_root)
    return carts, store_root, a, b


def test_a_collector_killed_inside_an_index_commit_loses_no_chunk_found_after(
        tmp_path: Path) -> None:
    """The collector SIGKILLed inside each of its index commits in turn (its transaction's
    frames in the WAL, not yet published): a writer that then takes the lock and finds the
    chunks that transaction removed must not lose them when a later open of the index
    recovers the WAL (docs/store-format.md, garbage collection)."""
    shim, env = _shim(tmp_path)
    for kill_at in itertools.count(1):
        carts, store_root, a, b = _two_cartridges(tmp_path / f"run{kill_at}")
        with TapeCartridge.open(a) as c:  # A stores the chunks, then lets them go
            for obj in range(EVERY - 1):
                c.write_block(expected_block(obj))
            c.write_filemarks(1)
            c.locate(0)
            c.erase()
        hitter = subprocess.Popen([sys.executable, "-c", HITTER, str(b), str(EVERY)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            assert hitter.stdout.readline() == b"ready\n"
            collector = subprocess.run(
                [sys.executable, "-c", COLLECT_ONCE, str(store_root), str(carts)],
                env=dict(env, LD_PRELOAD=str(shim), KILL_AT_WAL_SYNC=str(kill_at)))
            # B writes what A held: every chunk a hit, if the index still shows it
            hitter.stdin.write(b"go\n")
            hitter.stdin.flush()
            assert hitter.stdout.readline() == b"durable\n"
        finally:
            hitter.kill()
            hitter.wait()
        # The next open of the index is the first since every process that had it died
        # (none is left open here): it recovers the WAL.
        assert not _open_here(store_root / INDEX_NAME)
        assert check_cartridge(b) == EVERY
        store = ChunkStore(store_root)
        collect(store, carts, timeout=5)
        s = stats(store, carts)
        store.close()
        assert check_cartridge(b) == EVERY
        assert s.stored_chunks == s.chunks
        if collector.returncode != -signal.SIGKILL:
            assert collector.returncode == 0
            break
    assert kill_at > 2  # killed inside two commits at least: its settling, its sweep


def _open_here(path: Path) -> bool:
    """Whether this process has ``path`` open."""
    fds = Path("/proc/self/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


WRITE_ONCE = r"""
import random, sys
from pathlib import Path
from tape_formats.cartridge import TapeCartridge
with TapeCartridge.open(Path(sys.argv[1])) as c:
    for obj in range(int(sys.argv[2]) - 1):
        r = random.Random(obj)
        c.write_block(r.randbytes(r.randrange(2000, 90000)))
    c.write_filemarks(1)
"""


def test_a_writer_killed_inside_an_index_commit_leaves_no_row_to_a_removed_pack(
        tmp_path: Path) -> None:
    """A writer SIGKILLed inside each of its index commits in turn (rows for chunks of its
    pack in the WAL, not yet published) while another process keeps the index open; the
    collector then removes that pack, which no row it sees points into. A later recovery of
    the WAL must not bring those rows back: a writer would find the chunks and record them
    (the collector settles the index before it looks at it)."""
    shim, env = _shim(tmp_path)
    for kill_at in itertools.count(1):
        carts, store_root, a, b = _two_cartridges(tmp_path / f"run{kill_at}")
        holder = subprocess.Popen([sys.executable, "-c", HITTER, str(b), str(EVERY)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            assert holder.stdout.readline() == b"ready\n"  # the index stays open in it
            writer = subprocess.run(
                [sys.executable, "-c", WRITE_ONCE, str(a), str(EVERY)],
                env=dict(env, LD_PRELOAD=str(shim), KILL_AT_WAL_SYNC=str(kill_at)))
            store = ChunkStore(store_root)
            collect(store, carts, timeout=5)
            store.close()
        finally:
            holder.kill()
            holder.wait()
        assert not _open_here(store_root / INDEX_NAME)
        # The first open since every process that had the index died (it recovers the
        # WAL): B gets A's blocks, its chunks found if the index names them.
        with TapeCartridge.open(b) as c:
            for obj in range(EVERY - 1):
                c.write_block(expected_block(obj))
            c.write_filemarks(1)
        assert check_cartridge(b) == EVERY
        if writer.returncode != -signal.SIGKILL:
            assert writer.returncode == 0
            break
    assert kill_at > 1
