"""Fixed-block mode through the streaming fast paths must be invisible: one command sequence
against three libraries - C transport and C drive (vtl/_fastpath.c, vtl/_fastpath_write.c),
the pure-Python fast paths (stream_paths.ReferencePaths with TapeDrive.stream_read and
stream_write), and no fast path at all (every command through ``execute``) - gets
byte-identical answers (data, status, sense), the same READ POSITION after every command and
the same cartridge file at the end.

The sequence is a drive in fixed-block mode (`mt setblk N`): WRITE(6)/READ(6) of one block of
the mode's size (`tar -b 20` under `mt setblk 10240`) and of several (`mt setblk 512`),
random, text and zero data, with compression on and off, buffered and unbuffered mode, the
block size changed mid-tape; filemarks and variable-mode blocks of other lengths among them
(the fixed READs meet filemarks, ILI and end of data mid-run); LOCATE and REWIND (overwrites,
or WORM refusing them); injected read and write errors; logical block protection on and off;
a second initiator's reservation; and a small cartridge written up to early warning and end
of medium. The same again with multi-block records (``TapeCartridge.data_runs``: a
run of blocks stored as one DATA_RUN record), the three paths against each other."""

from __future__ import annotations

import random
import types
from pathlib import Path

import pytest
from iscsi_support import READ_POSITION, RawInitiator, lbp_select, two_sessions

from tape_formats import cartridge as cartridge_module
from tape_formats.cartridge import TapeCartridge
from tape_formats.records import DATA_START
from vtl import faults
from vtl.config import LibraryConfig
from vtl.iscsi import stream_paths
from vtl.iscsi.pdu import Op
from vtl.library import Library
from vtl.scsi import ssc
from vtl.scsi.devices import build_device_set
from vtl.scsi.ssc import TapeDrive

native = stream_paths.native
pytestmark = pytest.mark.skipif(native is None or not hasattr(native, "drive_reads"),
                                reason="vtl._fastpath is not built (or off)")

TEXT = b"".join(b"2026-12-04 22:%02d:%02d backup: /srv/data/%05d.log stored\n"
                % (i // 60 % 60, i % 60, i) for i in range(6000))


def _data(rng: random.Random, n: int) -> bytes:
    kind = rng.random()
    if kind < 0.45:
        return rng.randbytes(n)
    if kind < 0.55:
        return bytes(n)
    start = rng.randrange(len(TEXT))
    return (TEXT * (n // len(TEXT) + 2))[start:start + n]


def _setblk(bs: int, buffered: bool) -> tuple[bytes, bytes]:
    """MODE SELECT(6): the block descriptor's block length, and the buffered mode."""
    return (bytes([0x15, 0x10, 0, 0, 12, 0]),
            bytes([0, 0, 0x10 if buffered else 0, 8, 0, 0, 0, 0, 0]) + bs.to_bytes(3, "big"))


def _compression(on: bool) -> tuple[bytes, bytes]:
    page = bytes([0x0F, 14, 0xC0 if on else 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    return bytes([0x15, 0x10, 0, 0, 4 + 16, 0]), bytes(4) + page


def _run(root: Path, mode: str, worm: bool, data_runs: bool = False
         ) -> tuple[list[list[bytes]], bytes, int, int, int]:
    """The sequence against a fresh library; (answers, the cartridge's records, READ/WRITE(6)
    sent, of them run by ``execute``, runs queued lazily in the write buffer)."""
    cartridge_module.DATA_RUNS = data_runs  # read when the cartridge is opened
    decode = TapeCartridge._run_blocks

    def counting_decode(self, *args):
        RUN_DECODES[mode] = RUN_DECODES.get(mode, 0) + 1
        return decode(self, *args)

    RUN_DECODES[mode] = 0
    TapeCartridge._run_blocks = counting_decode  # type: ignore[method-assign]
    try:
        lib = Library.create(root, LibraryConfig(drives=1, slots=4, mailslots=1))
        barcode = "W00001LY" if worm else "F00001L8"
        lib.create_cartridge(barcode, capacity=40 << 20)
        lib.load(barcode, 0)
        return _sequence(lib, barcode, mode, worm)
    finally:
        cartridge_module.DATA_RUNS = False
        TapeCartridge._run_blocks = decode  # type: ignore[method-assign]


RUN_DECODES: dict[str, int] = {}  # DATA_RUN records decoded, per path (the last sequence's)


def _sequence(lib: Library, barcode: str, mode: str, worm: bool
              ) -> tuple[list[list[bytes]], bytes, int, int, int]:
    devices = dict(build_device_set(lib).luns)
    drive = devices[1]
    if mode == "general":
        drive.stream_read = drive.stream_write = None  # the transport finds no fast path
    elif mode == "python":
        drive.stream_write = types.MethodType(TapeDrive.stream_write, drive)
    executed = 0
    general = drive.execute

    def execute(nexus, cdb, data_out=None):
        nonlocal executed
        executed += cdb[0] in (0x08, 0x0A)
        return general(nexus, cdb, data_out)

    drive.execute = execute
    queued = 0
    queue_run = TapeCartridge.queue_run

    def counting_queue_run(self, *args, **kw):
        nonlocal queued
        ok = queue_run(self, *args, **kw)
        queued += ok
        return ok

    answers: list[list[bytes]] = []
    sent = 0
    rng = random.Random(11 + worm)
    try:
        paths = stream_paths.ReferencePaths if mode == "python" else native
        with pytest.MonkeyPatch.context() as mp, two_sessions(devices, paths=paths) as (a, b):
            mp.setattr(TapeCartridge, "queue_run", counting_queue_run)
            mp.setattr(ssc, "MIN_BUFFERED_RUN", 0)  # every run lazy: its path is compared

            def cmd(ini: RawInitiator, cdb: bytes, **kw) -> None:
                answers.append(ini.answers(ini.scsi(cdb, lun=1, **kw)))

            def select(ini: RawInitiator, sel: tuple[bytes, bytes]) -> None:
                cmd(ini, sel[0], write=sel[1], immediate_data=len(sel[1]))

            def wfixed(count: int, extra: int = 0) -> None:
                nonlocal sent
                sent += 1
                data = _data(rng, count * (bs + extra))
                cdb = bytes([0x0A, 1]) + count.to_bytes(3, "big") + b"\0"
                answers.append([bytes(a.write(cdb, data).hdr.raw)])

            def rfixed(count: int, extra: int = 0) -> None:
                nonlocal sent
                sent += 1
                cmd(a, bytes([0x08, 1]) + count.to_bytes(3, "big") + b"\0",
                    read=count * (bs + extra))

            cmd(a, bytes(6))  # TEST UNIT READY: the power-on UA
            cmd(b, bytes(6))
            bs = 10240
            buffered = True
            select(a, _setblk(bs, buffered))
            protected = False
            clear_at = -1
            last_count = 0
            for step in range(900):
                extra = 4 if protected else 0  # a block's protection information
                # blocks per command: mostly what fits in one PDU (the last ones need R2Ts)
                counts = (2, 3, 20, 20, 40, 128) if bs < 4096 else (2, 3, 7, 7, 20, 40)
                roll = rng.random()
                if rng.random() < 0.8:  # phases of mostly writing, then mostly reading
                    if (step // 50) % 2 == 0 and 0.45 <= roll < 0.77:
                        roll = (roll - 0.45) * 0.45 / 0.32
                    elif (step // 50) % 2 and roll < 0.45:
                        roll = 0.45 + roll * 0.32 / 0.45
                if (step // 50) % 4 == 3 and 0.45 <= roll < 0.62:
                    roll += 0.15  # some reading phases read runs only (mt setblk 512)
                cart = drive._cart  # the same state in every run: peeking changes nothing
                if cart is not None:  # (what is buffered stored first: the peek is timeless)
                    cart.wait_writes()
                if 0.45 <= roll < 0.77 and cart is not None and cart.at_eod and rng.random() < 0.8:
                    roll = 0.85  # a READ at end of data: jump back first (a few are enough)
                if worm and roll < 0.45 and cart is not None and not cart.at_eod \
                        and rng.random() < 0.8:  # WORM refuses overwrites: a few are enough
                    cmd(a, bytes([0x11, 3, 0, 0, 0, 0]))  # SPACE to end of data
                if roll < 0.30:
                    wfixed(1, extra)
                elif roll < 0.45:
                    wfixed(rng.choice(counts[:4] if rng.random() < 0.9 else counts), extra)
                elif roll < 0.62:
                    rfixed(1, extra)
                elif roll < 0.77:
                    if rng.random() < 0.3 or last_count not in counts:  # mostly as before
                        last_count = rng.choice(counts[:4] if rng.random() < 0.9 else counts)
                    rfixed(last_count, extra)  # (then the run decoded ahead is the one asked)
                elif roll < 0.79:
                    cmd(a, bytes([0x10, 0, 0, 0, rng.choice((1, 1, 2)), 0]))  # filemarks
                elif roll < 0.81:  # a variable-mode block: a fixed READ meets ILI there
                    n = rng.choice((100, bs + 1, bs - 1, bs))
                    sent += 1
                    cmd(a, bytes([0x0A, 0]) + n.to_bytes(3, "big") + b"\0",
                        write=_data(rng, n), immediate_data=n)
                elif roll < 0.86:  # back to read (or overwrite: WORM refuses)
                    end = cart.eod if cart is not None else 10
                    obj = rng.randrange(max(1, end - 200), end + 2)
                    cmd(a, bytes([0x2B, 0, 0]) + obj.to_bytes(4, "big") + bytes(3))  # LOCATE
                elif roll < 0.87:
                    cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
                elif roll < 0.875:
                    cmd(b, bytes([0x16, 0, 0, 0, 0, 0]))  # B: RESERVE(6): A conflicts
                elif roll < 0.90:
                    cmd(b, bytes([0x17, 0, 0, 0, 0, 0]))  # B: RELEASE(6)
                elif roll < 0.92 and rng.random() < 0.3:  # another block size, now and then
                    bs = rng.choice((512, 512, 10240, 32768))
                    buffered = rng.random() < 0.7
                    select(a, _setblk(bs, buffered))
                elif 0.90 <= roll < 0.93:
                    select(a, _compression(rng.random() < 0.6))
                elif roll < 0.94:  # LOG SENSE, sequential access: the bytes counters
                    cmd(a, bytes([0x4D, 0, 0x4C, 0, 0, 0, 0, 1, 0, 0]), read=256)
                elif roll < 0.96 and cart is not None:  # an error here or just on, a while
                    at = cart.position + rng.randrange(0, 2)
                    faults.inject_media_error(lib.root, barcode, at, 0, {
                        faults.WRITE if cart.at_eod else faults.READ})
                    cmd(a, bytes(6))  # TEST UNIT READY: a command off the data path reads it
                    clear_at = step + 4
                else:
                    cmd(a, bytes([0x03, 0, 0, 0, 18, 0]), read=18)  # REQUEST SENSE
                if step % 151 == 150 or (protected and step % 151 == 20):
                    protected = not protected  # LBP on for a while, then off
                    select(a, lbp_select(protected))
                cmd(a, READ_POSITION, read=20)
                if step == clear_at:
                    faults.clear_media_errors(lib.root, barcode)
                    cmd(a, bytes(6))
        cart = drive._medium()
        cart.flush_writes()
        records = cart.path.read_bytes()[DATA_START:]
    finally:
        lib.close()
    return answers, records, sent, executed, queued


@pytest.fixture(scope="module", params=[(False, False), (True, False), (False, True)],
                ids=["rewritable", "worm", "data-runs"])
def reference(request, tmp_path_factory: pytest.TempPathFactory):
    worm, data_runs = request.param
    return worm, data_runs, _run(tmp_path_factory.mktemp("general"), "general", worm, data_runs)


@pytest.mark.parametrize("mode", ["c", "python"])
def test_fixed_mode_fast_paths_answer_as_the_general_path(tmp_path: Path, reference,
                                                          mode: str) -> None:
    worm, data_runs, (general, records, sent, executed, queued) = reference
    answers, got, sent_here, executed_here, queued_here = _run(tmp_path / mode, mode, worm,
                                                               data_runs)
    assert len(answers) == len(general)
    for i, (x, y) in enumerate(zip(answers, general, strict=True)):
        assert x == y, f"answer {i} differs"
    assert got == records
    if data_runs:  # blocks were read out of runs of blocks
        assert RUN_DECODES[mode] > 5, RUN_DECODES
    assert sent_here == sent
    # the plain ones took a fast path (the transport refuses a few itself: LBP's lengths)
    assert executed_here < executed * 0.6, (executed_here, executed, sent)
    # buffered runs of several blocks went into the write buffer (lazily) on every path
    assert queued_here == queued > 5, (queued_here, queued)
    sense = [x[-1][50:] for x in general if x[-1][0] & 0x3F == Op.SCSI_RSP and len(x[-1]) > 50]
    keys = {(s[2] & 0x0F, s[2] & 0xE0) for s in sense if len(s) > 2}
    # the sequence met filemarks, ILI, end of data (or early warning) and medium errors
    assert {(0, 0x80), (0, 0x20), (8, 0), (3, 0)} <= keys, keys
