"""``vtl drive ...``, ``vtl changer tapealert`` and ``vtl cartridge inject-error``: the
drives' wear and cleaning state, and faults injected to test backup software (vtl.faults).

An injection is saved in ``<root>/faults.json`` and signalled to a running ``vtl serve``
(SIGHUP), which applies it at once; without a server it waits for the next one.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vtl.cli.common import (
    CliError,
    drive_index,
    emit_json,
    notify_server,
    open_library,
    say,
    settings,
)

drive_app = typer.Typer(help="Tape drives: wear and cleaning, injected TapeAlert flags.",
                        no_args_is_help=True)
changer_app = typer.Typer(help="The medium changer: injected TapeAlert flags.",
                          no_args_is_help=True)

FlagsArg = Annotated[list[str] | None, typer.Argument(
    help="TapeAlert flags: numbers 1..64 or names (clean-now, hard-error, library-door...).")]
ClearOpt = Annotated[bool, typer.Option("--clear", help="Drop what is pending instead.")]


def _flags(texts: list[str] | None, names: dict[str, int], clear: bool) -> set[int]:
    from vtl.faults import parse_flag

    if clear:
        if texts:
            raise CliError("--clear takes no flags")
        return set()
    if not texts:
        raise CliError("name at least one TapeAlert flag (or --clear)")
    return {parse_flag(t, names) for t in texts}


def _inject(device: str, what: str, flags: set[int], clear: bool) -> None:
    from vtl import faults

    root = settings().root
    if clear:
        faults.clear_tapealert(root, device)
        done = f"cleared the TapeAlert flags pending on {what}"
    else:
        faults.raise_tapealert(root, device, flags)
        done = f"raised TapeAlert {', '.join(map(str, sorted(flags)))} on {what}"
    say(f"{done}; {notify_server(root)}", {"device": what, "flags": sorted(flags)})


@drive_app.command("tapealert")
def drive_tapealert(
    drive: Annotated[str, typer.Argument(help="Drive number (0-based), drive:N or address.")],
    flags: FlagsArg = None,
    clear: ClearOpt = False,
) -> None:
    """Raise TapeAlert flags on a drive, once, as if it had met those conditions (LOG
    SENSE 0x2E reports them, then clears them)."""
    from vtl.faults import DRIVE_FLAGS, device_key

    with open_library(readonly=True) as lib:
        index = drive_index(lib, drive)
    _inject(device_key(index), f"drive:{index}", _flags(flags, DRIVE_FLAGS, clear), clear)


@changer_app.command("tapealert")
def changer_tapealert(flags: FlagsArg = None, clear: ClearOpt = False) -> None:
    """Raise TapeAlert flags on the changer, once (library-door, library-mailslot...)."""
    from vtl.faults import CHANGER, CHANGER_FLAGS

    with open_library(readonly=True):
        pass  # refuses a --root without a library
    _inject(CHANGER, "the changer", _flags(flags, CHANGER_FLAGS, clear), clear)


@drive_app.command("status")
def drive_status() -> None:
    """Each drive's wear since its last cleaning, and whether it asks for cleaning."""
    from rich.table import Table

    from vtl.cleaning import DriveUsage, read_usage
    from vtl.cli.common import console

    with open_library(readonly=True) as lib:
        usage = read_usage(lib.root)
        policy = lib.config.cleaning
        rows: list[dict[str, Any]] = []
        for bay in lib.drives:
            u = usage.get(bay.index, DriveUsage())
            rows.append({"drive": bay.index, "barcode": bay.barcode, "loads": u.loads,
                         "loaded_hours": round(u.loaded_seconds / 3600, 2),
                         "cleaning_due": u.cleaning_due(policy, bay.index),
                         "last_cleaned": u.last_cleaned, "cleanings": u.cleanings})
    if settings().json:
        emit_json(rows)
        return
    table = Table()
    for col in ("Drive", "Cartridge", "Loads", "Hours loaded", "Cleaning", "Last cleaned"):
        table.add_column(col)
    for r in rows:
        table.add_row(f"drive:{r['drive']}", r["barcode"] or "-", str(r["loads"]),
                      f"{r['loaded_hours']:.2f}", "due" if r["cleaning_due"] else "-",
                      r["last_cleaned"] or "never")
    console().print(table)


def inject_error(
    barcode: Annotated[str, typer.Argument(help="Cartridge barcode, e.g. A00001L8.")],
    block: Annotated[int | None, typer.Option(
        help="Logical block (object) number, as READ POSITION counts it.")] = None,
    read: Annotated[bool, typer.Option("--read", help="Fail READ/VERIFY there.")] = False,
    write: Annotated[bool, typer.Option("--write", help="Fail WRITE there.")] = False,
    partition: Annotated[int, typer.Option(help="Partition of the block (0..3).")] = 0,
    clear: Annotated[bool, typer.Option(
        "--clear", help="Clear the error at --block, or all of the cartridge's.")] = False,
) -> None:
    """Make READ and/or WRITE at a block of a cartridge fail with MEDIUM ERROR (11/00,
    0C/00) until cleared, for testing how backup software copes (neither flag: both)."""
    from vtl import faults

    barcode = barcode.upper()
    if not 0 <= partition <= 3:
        raise CliError(f"--partition must be 0..3, not {partition}")
    if block is not None and block < 0:
        raise CliError(f"--block must be 0 or more, not {block}")
    with open_library(readonly=True) as lib:
        lib.cartridge(barcode)  # an unknown or malformed barcode is refused here
    root = settings().root
    if clear:
        if read or write:
            raise CliError("--clear takes no --read/--write")
        n = faults.clear_media_errors(root, barcode, block, partition)
        say(f"cleared {n} injected error(s) of {barcode}; {notify_server(root)}",
            {"barcode": barcode, "cleared": n})
        return
    if block is None:
        raise CliError("give --block N (or --clear)")
    ops = {op for op, on in ((faults.READ, read), (faults.WRITE, write)) if on} or \
        {faults.READ, faults.WRITE}
    faults.inject_media_error(root, barcode, block, partition, ops)
    say(f"{' and '.join(sorted(ops))} at block {block} of {barcode} (partition {partition}) "
        f"will fail with MEDIUM ERROR; {notify_server(root)}",
        {"barcode": barcode, "block": block, "partition": partition, "ops": sorted(ops)})


def register(root: typer.Typer) -> None:
    root.add_typer(drive_app, name="drive")
    root.add_typer(changer_app, name="changer")
    from vtl.cli import cartridge

    cartridge.app.command("inject-error")(inject_error)
