"""The library API: elements, moves between every element type, errors, claims, processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vtl import inventory, mailslots
from vtl.config import ConfigError, LibraryConfig
from vtl.library import (
    BadBarcode,
    CartridgeBusy,
    CartridgeInDrive,
    CartridgeOutside,
    CartridgeProtected,
    DestinationFull,
    DuplicateBarcode,
    ElementType,
    InvalidElement,
    Library,
    LibraryError,
    MediumRemovalPrevented,
    NoLibrary,
    SourceEmpty,
    UnknownBarcode,
)

SLOT1, SLOT2, SLOT3, SLOT4 = 1024, 1025, 1026, 1027
DRIVE0, DRIVE1 = 256, 257
MAIL1, MAIL2 = 16, 17


def run_py(code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a snippet in another process (the 'other' server/CLI/EBM)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=60, check=check,
    )


# ---- create / open / config ----------------------------------------------------------------
def test_create_and_open(library_root: Path, small_config: LibraryConfig) -> None:
    lib = Library.create(library_root, small_config)
    assert (library_root / "library.toml").is_file()
    assert (library_root / "catalog.sqlite").is_file()
    lib.close()
    with pytest.raises(LibraryError, match="already exists"):
        Library.create(library_root, small_config)
    lib = Library.open(library_root)
    assert lib.config == small_config
    assert [b.serial for b in lib.drives] == ["VTLD000001", "VTLD000002"]
    journal = lib.catalog.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
    lib.close()


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(NoLibrary):
        Library.open(tmp_path / "nothing")


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    cfg = LibraryConfig()
    assert (cfg.drives, cfg.slots, cfg.mailslots, cfg.media) == (4, 40, 4, "LTO-8")
    assert (cfg.transport_base, cfg.mailslot_base, cfg.drive_base, cfg.slot_base) == (
        1, 16, 256, 1024)
    assert cfg.iscsi.portal_host == "127.0.0.1" and cfg.iscsi.portal_port == 3260
    cfg.save(tmp_path)
    assert LibraryConfig.load(tmp_path) == cfg
    for bad in (
        LibraryConfig(drives=0),
        LibraryConfig(media="LTO-2"),
        LibraryConfig(mailslots=300),
        LibraryConfig(slot_base=18),  # overlaps the mailslots 16..19
        LibraryConfig(changer_model="ACME-9000"),  # not an emulated identity
    ):
        with pytest.raises(ConfigError):
            bad.validate()
    (tmp_path / "library.toml").write_text('drives = "four"\n')
    with pytest.raises(ConfigError, match="drives"):
        LibraryConfig.load(tmp_path)
    (tmp_path / "library.toml").write_text("drivez = 4\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        LibraryConfig.load(tmp_path)


# ---- elements ------------------------------------------------------------------------------
def test_elements(library: Library) -> None:
    els = library.elements()
    kinds = [e.type for e in els]
    assert kinds.count(ElementType.MEDIUM_TRANSPORT) == 1
    assert kinds.count(ElementType.IMPORT_EXPORT) == 2
    assert kinds.count(ElementType.DATA_TRANSFER) == 2
    assert kinds.count(ElementType.STORAGE) == 8
    assert [e.address for e in els] == sorted(e.address for e in els)
    slots = library.elements(ElementType.STORAGE)
    assert [e.barcode for e in slots[:4]] == ["A00001L8", "A00002L8", "A00003L8", None]
    assert slots[0].media == "LTO-8" and slots[0].index == 0 and slots[0].name == "slot:1"
    assert library.element(DRIVE1).name == "drive:1"
    with pytest.raises(InvalidElement):
        library.element(5000)
    assert library.resolve("slot:2") == SLOT2
    assert library.resolve("drive:0") == DRIVE0
    assert library.resolve("mailslot:2") == MAIL2
    assert library.resolve("A00003L8", allow_barcode=True) == SLOT3
    for bad in ("slot:0", "slot:9", "drive:2", "nonsense", "mailslot"):
        with pytest.raises(InvalidElement):
            library.resolve(bad)


# ---- moves -----------------------------------------------------------------------------------
def test_moves_between_all_element_types(library: Library) -> None:
    library.move_medium(SLOT1, DRIVE0)  # slot -> drive
    assert library.element(DRIVE0).barcode == "A00001L8"
    assert library.element(DRIVE0).source_address == SLOT1
    library.move_medium(DRIVE0, DRIVE1)  # drive -> drive
    library.move_medium(DRIVE1, MAIL1)  # drive -> mailslot
    library.move_medium(MAIL1, MAIL2)  # mailslot -> mailslot
    library.move_medium(MAIL2, DRIVE0)  # mailslot -> drive
    library.move_medium(DRIVE0, SLOT4)  # drive -> slot
    library.move_medium(SLOT4, MAIL1)  # slot -> mailslot
    library.move_medium(MAIL1, SLOT1)  # mailslot -> slot
    library.move_medium(SLOT1, SLOT4)  # slot -> slot
    assert library.find("A00001L8").address == SLOT4
    row = library.cartridge("A00001L8")
    assert row["load_count"] == 3  # three moves into a drive
    assert row["home_address"] == SLOT1  # the last storage slot it left from
    moves = [e for e in library.catalog.events("A00001L8") if e["action"] == "move"]
    assert len(moves) == 9


def test_move_errors_change_nothing(library: Library) -> None:
    before = {e.address: e.barcode for e in library.elements()}
    with pytest.raises(SourceEmpty):
        library.move_medium(SLOT4, DRIVE0)
    with pytest.raises(DestinationFull):
        library.move_medium(SLOT1, SLOT2)
    with pytest.raises(InvalidElement):
        library.move_medium(SLOT1, 1)  # the transport
    with pytest.raises(InvalidElement):
        library.move_medium(SLOT1, 9999)
    assert {e.address: e.barcode for e in library.elements()} == before


def test_load_unload_and_mount(library: Library) -> None:
    bay = library.load("A00002L8", 1)
    assert bay.barcode == "A00002L8"
    gen = bay.media_generation
    cart = bay.mount()
    assert bay.mount() is cart  # idempotent
    cart.write_block(b"x" * 1000)
    cart.write_filemarks(1)
    cart.write_block(b"y" * 10)
    bay.prevent_removal = True
    with pytest.raises(MediumRemovalPrevented):
        library.unload(1)
    bay.prevent_removal = False
    library.unload(1)  # unmounts, records stats, goes home
    assert bay.cartridge is None and bay.barcode is None
    assert bay.media_generation > gen
    row = library.cartridge("A00002L8")
    assert row["address"] == SLOT2
    assert (row["files"], row["blocks"], row["state"]) == (2, 3, "append")
    assert row["used_bytes"] > 0 and row["last_written"] and row["last_read"] is None
    cart = library.load("A00002L8", 1).mount()
    cart.rewind()
    assert cart.read_block().length == 1000
    library.unload(1)
    assert library.cartridge("A00002L8")["last_read"]
    with pytest.raises(SourceEmpty):
        library.unload(1)
    with pytest.raises(SourceEmpty):
        library.drives[0].mount()


def test_unload_when_home_taken(library: Library) -> None:
    library.load("A00001L8", 0)
    library.move_medium(SLOT2, SLOT1)  # someone takes its home slot
    library.unload(0)
    assert library.find("A00001L8").address == SLOT2  # first free slot


def test_unload_waits_for_a_running_command(library: Library) -> None:
    """A changer thread's move never closes the cartridge under a drive thread's WRITE."""
    import threading

    bay = library.load("A00001L8", 0)
    bay.mount()
    errors: list[BaseException] = []
    writes = 0
    stop = threading.Event()

    def drive_thread() -> None:
        nonlocal writes
        while not stop.is_set():
            with bay.io_lock:
                cart = bay.cartridge
                if cart is None:
                    return
                try:
                    cart.write_block(b"z" * 512)
                    writes += 1
                except BaseException as e:
                    errors.append(e)
                    return

    t = threading.Thread(target=drive_thread)
    t.start()
    import time

    deadline = time.monotonic() + 30
    while writes < 20 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.005)
    library.unload(0)
    stop.set()
    t.join(10)
    assert not errors
    assert library.cartridge("A00001L8")["blocks"] >= 20


# ---- cartridges ----------------------------------------------------------------------------
def test_create_cartridge_errors(library: Library) -> None:
    with pytest.raises(DuplicateBarcode):
        library.create_cartridge("A00001L8")
    with pytest.raises(BadBarcode):
        library.create_cartridge("A0001L8")
    with pytest.raises(BadBarcode):
        library.create_cartridge("A00009L8", media="LTO-7")
    with pytest.raises(DestinationFull):
        library.create_cartridge("A00009L8", slot=SLOT1)
    with pytest.raises(InvalidElement):
        library.create_cartridge("A00009L8", slot=DRIVE0)
    # all or nothing: 6 more do not fit into 5 free slots
    with pytest.raises(DestinationFull):
        library.create_cartridges([f"B0000{i}L8" for i in range(1, 7)], capacity=1 << 20)
    assert library.catalog.cartridges(pool=None) and not any(
        r["barcode"].startswith("B") for r in library.catalog.cartridges())
    assert not list((library.root / "cartridges").glob("B*"))


def test_worm_from_suffix_and_vault(library: Library) -> None:
    library.create_cartridge("W00001LY", capacity=1 << 20, vault=True)
    row = library.cartridge("W00001LY")
    assert row["worm"] == 1 and row["address"] is None
    assert library.where("W00001LY") is None
    with pytest.raises(CartridgeOutside):
        library.find("W00001LY")
    with pytest.raises(UnknownBarcode):
        library.find("Z00001L8")


def test_erase_protect_worm_delete(library: Library) -> None:
    bay = library.load("A00001L8", 0)
    bay.mount().write_block(b"data")
    with pytest.raises(CartridgeInDrive):
        inventory.erase_cartridge(library, "A00001L8")
    with pytest.raises(CartridgeInDrive):
        inventory.delete_cartridge(library, "A00001L8", force=True)
    library.unload(0)
    with pytest.raises(CartridgeProtected):
        inventory.make_worm(library, "A00001L8")  # holds data
    inventory.erase_cartridge(library, "A00001L8")
    row = library.cartridge("A00001L8")
    assert (row["used_bytes"], row["blocks"], row["state"]) == (0, 0, "scratch")

    inventory.set_write_protect(library, "A00002L8", True)
    assert library.cartridge("A00002L8")["state"] == "read-only"
    with pytest.raises(CartridgeProtected):
        inventory.erase_cartridge(library, "A00002L8")
    cart = library.load("A00002L8", 1).mount()
    assert cart.write_protected
    library.unload(1)
    inventory.set_write_protect(library, "A00002L8", False)
    assert not library.cartridge("A00002L8")["write_protected"]

    inventory.make_worm(library, "A00003L8")
    assert library.cartridge("A00003L8")["worm"] == 1
    cart = library.load("A00003L8", 0).mount()
    assert cart.worm
    library.unload(0)
    with pytest.raises(CartridgeProtected):
        inventory.erase_cartridge(library, "A00003L8")

    inventory.delete_cartridge(library, "A00001L8")
    with pytest.raises(UnknownBarcode):
        library.cartridge("A00001L8")
    assert not list((library.root / "cartridges").glob("A00001L8*"))


def test_import_export(library: Library) -> None:
    assert mailslots.export_cartridge(library, "A00001L8").address == MAIL1
    assert mailslots.export_cartridge(library, "A00002L8").address == MAIL2
    with pytest.raises(DestinationFull):
        mailslots.export_cartridge(library, "A00003L8")
    assert mailslots.empty_mailslots(library) == ["A00001L8", "A00002L8"]
    assert library.where("A00001L8") is None
    with pytest.raises(LibraryError, match="already in the library"):
        mailslots.import_cartridge(library, "A00003L8")
    assert mailslots.import_cartridge(library, "A00001L8").address == MAIL1
    library.move_medium(MAIL1, SLOT4)
    assert library.find("A00001L8").address == SLOT4


# ---- claims and other processes --------------------------------------------------------------
def test_drive_claims(library: Library) -> None:
    bay = library.claim_drive("ebm-job-1")
    assert bay.index == 0
    assert library.claims()[0]["owner"] == "ebm-job-1"
    assert library.claim_drive("ebm-job-2").index == 1
    with pytest.raises(CartridgeBusy):
        library.claim_drive("ebm-job-3")
    with pytest.raises(CartridgeBusy):
        library.claim_drive("ebm-job-3", 0)
    library.release_drive(0)
    library.release_drive(1)
    assert library.claims() == {}


def test_claim_by_other_process_and_stale_claim(library: Library) -> None:
    code = """
        import sys, time
        from vtl.library import Library
        lib = Library.open(sys.argv[1])
        lib.claim_drive("other", 0)
        print("claimed", flush=True)
        time.sleep(float(sys.argv[2]))
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(library.root), "30"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        with pytest.raises(CartridgeBusy, match="claimed by other"):
            library.claim_drive("me", 0)
        with pytest.raises(CartridgeBusy):
            library.load("A00001L8", 0)  # cannot load into someone else's drive
        assert library.claim_drive("me").index == 1  # the free one
    finally:
        proc.kill()
        proc.wait()
    assert library.claim_drive("me", 0).index == 0  # the dead process's claim is stale


def test_cross_process_refresh(library: Library) -> None:
    bay = library.drives[0]
    gen = bay.media_generation
    assert library.refresh() is False
    run_py(
        """
        import sys
        from vtl.library import Library
        lib = Library.open(sys.argv[1])
        lib.load("A00001L8", 0)
        lib.close()
        """,
        str(library.root),
    )
    assert library.refresh() is True
    assert bay.barcode == "A00001L8"
    assert bay.media_generation == gen + 1
    assert library.refresh() is False


def test_mounted_cartridge_is_busy_for_other_processes(library: Library) -> None:
    bay = library.load("A00001L8", 0)
    bay.mount()
    result = run_py(
        """
        import sys
        from vtl.library import Library, CartridgeBusy
        lib = Library.open(sys.argv[1])
        for op in (lambda: lib.unload(0), lambda: lib.drives[0].mount()):
            try:
                op()
                print("moved")
            except CartridgeBusy as e:
                print("busy", e)
        """,
        str(library.root),
    )
    assert result.stdout.count("busy") == 2, result.stdout + result.stderr
    bay.unmount()
    run_py(
        "import sys; from vtl.library import Library; Library.open(sys.argv[1]).unload(0)",
        str(library.root),
    )
    assert library.find("A00001L8").address == SLOT1


def test_mailslot_door_locked_by_other_process(library: Library) -> None:
    code = """
        import sys, time
        from vtl.library import Library
        from vtl.scsi.smc_lock import set_mailslot_lock
        lib = Library.open(sys.argv[1])
        set_mailslot_lock(lib.catalog, True, "initiator-x")
        print("locked", flush=True)
        time.sleep(30)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(library.root)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(MediumRemovalPrevented, match="locked by initiator-x"):
            mailslots.export_cartridge(library, "A00001L8")
        with pytest.raises(MediumRemovalPrevented):
            mailslots.empty_mailslots(library)
        library.move_medium(SLOT1, MAIL1)  # the robot itself may still use the mailslots
    finally:
        proc.kill()
        proc.wait()
    assert mailslots.empty_mailslots(library) == ["A00001L8"]  # a dead server's lock does not count


def test_concurrent_movers_keep_placement_consistent(library: Library) -> None:
    """Three processes move cartridges at random at once: only the expected refusals
    (source empty / destination full after a race), never a lost or doubled cartridge."""
    code = """
        import random, sys
        from vtl.library import Library, SourceEmpty, DestinationFull, CartridgeBusy
        lib = Library.open(sys.argv[1])
        rng = random.Random(int(sys.argv[2]))
        addrs = [e.address for e in lib.elements() if e.type != 1]
        done = refused = 0
        for _ in range(20):
            src, dst = rng.sample(addrs, 2)
            try:
                lib.move_medium(src, dst)
                done += 1
            except (SourceEmpty, DestinationFull, CartridgeBusy):  # lost a race: refused
                refused += 1
        print(done, refused)
    """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(library.root),
                          str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    library.refresh()
    placed = [e.barcode for e in library.elements() if e.barcode]
    assert sorted(placed) == ["A00001L8", "A00002L8", "A00003L8"]
    for bc in placed:
        assert library.find(bc).address == library.cartridge(bc)["address"]


# ---- model check -----------------------------------------------------------------------------


class LibraryModel(RuleBasedStateMachine):
    """Random moves, loads, unloads, exports and imports against a dict of where each
    cartridge is; every refusal must leave the library exactly as the model says."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.lib = Library.create(Path(self.tmp.name) / "lib",
                                  LibraryConfig(drives=2, slots=4, mailslots=1))
        self.lib.create_cartridges(["A00001L8", "A00002L8", "A00003L8"], capacity=1 << 20)
        self.where: dict[str, int | None] = {"A00001L8": SLOT1, "A00002L8": SLOT2,
                                             "A00003L8": SLOT3}
        self.addresses = [e.address for e in self.lib.elements()
                          if e.type != ElementType.MEDIUM_TRANSPORT]

    def teardown(self) -> None:
        self.lib.close()
        self.tmp.cleanup()

    def _at(self, address: int) -> str | None:
        return next((b for b, a in self.where.items() if a == address), None)

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        src = data.draw(st.sampled_from(self.addresses))
        dst = data.draw(st.sampled_from(self.addresses))
        barcode = self._at(src)
        try:
            self.lib.move_medium(src, dst)
        except SourceEmpty:
            assert barcode is None
        except DestinationFull:
            assert barcode is not None and self._at(dst) is not None
        else:
            assert barcode is not None and (src == dst or self._at(dst) is None)
            self.where[barcode] = dst

    @rule(barcode=st.sampled_from(["A00001L8", "A00002L8", "A00003L8"]),
          drive=st.sampled_from([0, 1]))
    def load(self, barcode: str, drive: int) -> None:
        address = DRIVE0 + drive
        try:
            self.lib.load(barcode, drive)
        except CartridgeOutside:
            assert self.where[barcode] is None
        except DestinationFull:
            assert self._at(address) not in (None, barcode)
        else:
            self.where[barcode] = address

    @rule(drive=st.sampled_from([0, 1]))
    def unload(self, drive: int) -> None:
        barcode = self._at(DRIVE0 + drive)
        try:
            self.lib.unload(drive)
        except SourceEmpty:
            assert barcode is None
        except DestinationFull:
            assert all(self._at(a) for a in (SLOT1, SLOT2, SLOT3, SLOT4))
        else:
            assert barcode is not None
            self.where[barcode] = self.lib.find(barcode).address
            assert self.lib.element(self.where[barcode]).type == ElementType.STORAGE

    @rule()
    def empty_mailslots(self) -> None:
        barcode = self._at(MAIL1)
        assert mailslots.empty_mailslots(self.lib) == ([barcode] if barcode else [])
        if barcode:
            self.where[barcode] = None

    @rule(barcode=st.sampled_from(["A00001L8", "A00002L8", "A00003L8"]))
    def import_(self, barcode: str) -> None:
        try:
            mailslots.import_cartridge(self.lib, barcode)
        except DestinationFull:
            assert self.where[barcode] is None and self._at(MAIL1) is not None
        except LibraryError:
            assert self.where[barcode] is not None
        else:
            self.where[barcode] = MAIL1

    @invariant()
    def matches_model(self) -> None:
        for barcode, address in self.where.items():
            assert self.lib.cartridge(barcode)["address"] == address
        placed = {e.address: e.barcode for e in self.lib.elements() if e.barcode}
        assert placed == {a: b for b, a in self.where.items() if a is not None}


LibraryModel.TestCase.settings = settings(
    max_examples=12, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLibraryModel = LibraryModel.TestCase
