"""``vtl cartridge ...``: create, list, show, import/export, archive/retrieve, erase, protect,
WORM, verify.

Every command validates all of its input before it changes anything; the library methods it
calls do the same and roll back a batch that fails half-way.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any

import typer

from vtl.cli.common import (
    CliError,
    console,
    emit_json,
    err_console,
    expand_range,
    generate_labels,
    open_library,
    say,
    settings,
)
from vtl.cli.formatting import human_size, parse_size

app = typer.Typer(help="Create and manage cartridges.", no_args_is_help=True)

BarcodeArg = Annotated[str, typer.Argument(help="Cartridge barcode, e.g. A00001L8.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Confirm a destructive action.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Go ahead although the cartridge holds EBM backups still under retention.")]


def _row_json(lib: Any, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["location"] = row.get("archived_to") or lib.element_name(row["address"])
    out["lease"] = _lease_of(lib, row["barcode"])
    out["worm"] = bool(row["worm"])
    out["write_protected"] = bool(row["write_protected"])
    left = _cleanings_left(lib, row)
    if left is not None:
        out["cleanings_left"] = left
    return out


def _cleanings_left(lib: Any, row: dict[str, Any]) -> int | None:
    """A cleaning cartridge's cleanings left (from its memory); None for data cartridges."""
    from vtl.barcode import is_cleaning_label

    if not is_cleaning_label(row["barcode"]):
        return None
    from vtl.cleaning import read_cleanings_left

    left = read_cleanings_left(lib.root / row["path"])
    return None if left is None else max(left, 0)


@app.command()
def create(
    labels: Annotated[
        str | None,
        typer.Argument(help="A barcode (A00001L8) or a range (A00001L8-A00020L8)."),
    ] = None,
    count: Annotated[int | None, typer.Option(help="Create N new labels (with --prefix).")] = None,
    prefix: Annotated[str | None, typer.Option(help="Label prefix for --count, e.g. A.")] = None,
    media: Annotated[str | None, typer.Option(help="Media (LTO-8...); default from the label "
                                                   "or the library.")] = None,
    worm: Annotated[bool, typer.Option("--worm", help="Create WORM cartridges.")] = False,
    capacity: Annotated[str | None, typer.Option(help="Native capacity, e.g. 64MiB "
                                                      "(small test cartridges).")] = None,
    slot: Annotated[str | None, typer.Option(help="Slot for a single cartridge (slot:N).")] = None,
    vault: Annotated[bool, typer.Option("--vault", help="Create outside the library.")] = False,
    pool: Annotated[str, typer.Option(help="Pool for the new cartridges.")] = "Scratch",
    cycles: Annotated[int | None, typer.Option(
        help="Cleanings a new cleaning cartridge (CLN001L1) is good for; default: "
             "library.toml's [cleaning] cycles, 50.")] = None,
) -> None:
    """Create cartridges by barcode, barcode range, or --count/--prefix. Cleaning labels
    (CLN001L1..CLN999L1) make cleaning cartridges."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from vtl.library import ElementType, media_type

    size = parse_size(capacity) if capacity is not None else None
    from vtl import inventory

    with open_library() as lib:
        if labels is not None and (count is not None or prefix is not None):
            raise CliError("give either a barcode/range or --count/--prefix, not both")
        if labels is None:
            if count is None or prefix is None:
                raise CliError("give a barcode, a range, or --count N --prefix P")
            mname = (media or lib.config.media).upper()
            mtype = media_type(mname)
            suffix = mtype.worm_suffix if worm else mtype.suffix
            existing = {r["barcode"] for r in lib.catalog.cartridges()}
            barcodes = generate_labels(prefix, count, suffix, existing)
        else:
            barcodes = expand_range(labels)
        slots = None
        if slot is not None:
            if len(barcodes) != 1:
                raise CliError("--slot needs a single barcode")
            if vault:
                raise CliError("--slot and --vault exclude each other")
            address = lib.resolve(slot)
            if lib.element(address).type != ElementType.STORAGE:
                raise CliError(f"{slot!r} is not a storage slot")
            slots = [address]
        # The bar starts at the first created cartridge: validation errors stay one line.
        show_bar = not settings().json and len(barcodes) >= 10 and sys.stderr.isatty()
        bar: list[Progress] = []

        def step(bc: str) -> None:
            if not show_bar:
                return
            if not bar:
                bar.append(Progress(
                    TextColumn("creating"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.description}"), console=err_console(), transient=True,
                ))
                bar[0].start()
                bar[0].add_task("", total=len(barcodes))
            bar[0].update(bar[0].task_ids[0], advance=1, description=bc)

        from vtl.barcode import is_cleaning_label, parse_barcode
        from vtl.media_compat import check_writable

        for bc in barcodes:  # before anything is made: a refusal changes nothing
            if not is_cleaning_label(bc):
                check_writable(lib.config, media.upper() if media else parse_barcode(bc)[0], bc)
        try:
            created = inventory.create_cartridges(
                lib, barcodes, media=media.upper() if media else None, capacity=size, worm=worm,
                slots=slots, vault=vault, pool=pool, progress=step, cycles=cycles,
            )
        finally:
            if bar:
                bar[0].stop()
        rows = [lib.cartridge(bc) for bc in created]
        where = ", ".join(f"{r['barcode']}@{lib.element_name(r['address'])}" for r in rows[:5])
        more = f" ... ({len(rows)} total)" if len(rows) > 5 else ""
        say(f"created {len(rows)} cartridge(s): {where}{more}",
            {"cartridges": [_row_json(lib, r) for r in rows]})


@app.command("list")
def list_(
    pool: Annotated[str | None, typer.Option(help="Only this pool.")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    remote: Annotated[bool, typer.Option(
        "--remote", help="What the object store holds instead: every gateway's archived "
        "cartridges and which gateway holds which (leases).")] = False,
) -> None:
    """List cartridges: location, media, used/capacity, files, state, flags, pool."""
    from vtl.cli.tables import Table
    from vtl.leases import held

    if remote:
        _list_remote()
        return
    with open_library(readonly=True) as lib:
        rows = lib.catalog.cartridges(pool=pool, state=state)
        leased = held(lib.root)
        if settings().json:
            emit_json([_row_json(lib, r) for r in rows])
            return
        table = Table()
        for col in ("Barcode", "Location", "Media", "Used / Capacity", "Files", "State", "Flags",
                    "Pool"):
            table.add_column(col)
        for r in rows:
            # left open by a process that died: the counts are the last ones recorded, until
            # the next process that changes the library recounts them (Library.reconcile)
            stale = r.get("open_since") is not None and not lib.in_use(r["barcode"])
            left = _cleanings_left(lib, r)
            flags = " ".join(f for f, on in (("WORM", r["worm"]), ("WP", r["write_protected"]),
                                             ("STALE", stale),
                                             (f"lease {lib.config.s3.gateway}",
                                              r["barcode"] in leased),
                                             (f"{left} cleanings left", left is not None))
                             if on)
            pct = 100.0 * r["used_bytes"] / r["capacity"] if r["capacity"] else 0.0
            table.add_row(
                r["barcode"], r.get("archived_to") or lib.element_name(r["address"]), r["media"],
                f"{human_size(r['used_bytes'])} / {human_size(r['capacity'])} ({pct:.0f}%)",
                str(r["files"]), r["state"], flags, r["pool"] or "",
            )
        table.print()
        print(f"{len(rows)} cartridge(s)")


def _lease_of(lib: Any, barcode: str) -> str | None:
    """The gateway (this one) holding ``barcode``'s lease in a shared bucket, else None."""
    from vtl.leases import held

    return lib.config.s3.gateway if barcode in held(lib.root) else None


def _list_remote() -> None:
    from vtl.cli.s3_access import object_store
    from vtl.cli.tables import Table
    from vtl.shared_bucket import remote_cartridges

    with open_library(readonly=True) as lib, object_store(lib, None) as (client, bucket,
                                                                         prefix):
        rows = remote_cartridges(client, bucket, prefix, lib.config.s3.lease_ttl)
    if settings().json:
        emit_json([asdict(r) for r in rows])
        return
    table = Table()
    for col in ("Barcode", "Held by", "Lease until", "Archive"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.barcode, r.held_by or "", r.lease_until or "", r.archive or "")
    table.print()
    print(f"{len(rows)} cartridge(s) in s3://{bucket}/{prefix}")


def _tape_files(lib: Any, barcode: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Tape files from the cartridge's index, or (None, why) when it cannot be opened now."""
    from tape_formats.cartridge import CartridgeError
    from vtl.library import LibraryError

    try:
        cart = lib.open_readonly(barcode)
    except (LibraryError, CartridgeError) as e:
        return None, str(e)
    try:
        files = [_tape_file_json(f) for f in cart.tape_files()]
    finally:
        cart.close()
    return files, None


def _tape_file_json(f: Any) -> dict[str, Any]:
    """One ``TapeFile``; the empty files of a run of filemarks are one entry with their count."""
    row = {"file": f.number, "first_block": f.first_object, "blocks": f.blocks,
           "bytes": f.native_bytes}
    if f.count > 1:
        row["empty_files"] = f.count
    return row


@app.command()
def show(barcode: BarcodeArg) -> None:
    """Everything about one cartridge, including its tape files."""
    from rich.table import Table

    barcode = barcode.upper()
    with open_library(readonly=True) as lib:
        row = lib.cartridge(barcode)
        files, why = _tape_files(lib, barcode)
        events = lib.catalog.events(barcode, limit=10)
        if settings().json:
            emit_json({**_row_json(lib, row), "tape_files": files, "tape_files_error": why,
                       "events": events})
            return
        info = Table(show_header=False, title=f"cartridge {barcode}")
        info.add_column("key")
        info.add_column("value")
        for key, value in _row_json(lib, row).items():
            if key in ("address", "source_address", "home_address"):
                value = f"{lib.element_name(value)} ({value})" if value is not None else "-"
            elif key in ("capacity", "used_bytes"):
                value = f"{human_size(value)} ({value})"
            info.add_row(key, "-" if value is None else str(value))
        console().print(info)
        if files is None:
            console().print(f"tape files unavailable: {why}", markup=False)
        else:
            t = Table(title="tape files")
            for col in ("File", "First block", "Blocks", "Bytes"):
                t.add_column(col, justify="right")
            for f in files:
                if "empty_files" in f:  # a run of filemarks: its empty files in one row
                    last = f["file"] + f["empty_files"] - 1
                    t.add_row(f"{f['file']}-{last}", str(f["first_block"]),
                              f"{f['empty_files']} empty tape files", "0")
                    continue
                t.add_row(str(f["file"]), str(f["first_block"]), str(f["blocks"]),
                          f"{f['bytes']} ({human_size(f['bytes'])})")
            console().print(t)
        if events:
            t = Table(title="recent events")
            for col in ("Time", "Action", "From", "To"):
                t.add_column(col)
            for ev in events:
                t.add_row(ev["time"], ev["action"],
                          lib.element_name(ev["src"]) if ev["src"] is not None else "",
                          lib.element_name(ev["dst"]) if ev["dst"] is not None else "")
            console().print(t)


@app.command("export")
def export_(barcodes: Annotated[list[str], typer.Argument(help="Cartridge(s) to export.")],
            force: ForceOpt = False) -> None:
    """Move cartridges from their slots into free mailslots (without --force, not one that
    holds EBM backups still under retention)."""
    from vtl import mailslots

    with open_library() as lib:
        barcodes = [b.upper() for b in barcodes]
        _check_all_known(lib, barcodes)
        from vtl.library import DestinationFull, ElementType

        free = len(lib.free(ElementType.IMPORT_EXPORT))
        if len(barcodes) > free:
            raise DestinationFull(f"{len(barcodes)} cartridge(s) to export but {free} free mailslot(s)")
        for bc in barcodes:  # check each can go before moving any
            element = lib.find(bc)
            if element.type == ElementType.DATA_TRANSFER:
                from vtl.library import CartridgeInDrive

                raise CartridgeInDrive(f"cartridge {bc} is in {element.name}; unload it first")
            if element.type == ElementType.IMPORT_EXPORT:
                raise CliError(f"cartridge {bc} is already in {element.name}")
            _guard_backups(lib, bc, "export it", force)
        done = [(bc, mailslots.export_cartridge(lib, bc).name) for bc in barcodes]
        say("exported " + ", ".join(f"{bc} -> {where}" for bc, where in done),
            {"exported": [{"barcode": bc, "to": where} for bc, where in done]})


@app.command("import")
def import_(barcodes: Annotated[list[str], typer.Argument(help="Vaulted cartridge(s).")],
            from_: Annotated[str | None, typer.Option(
                "--from", metavar="s3", help="Take in cartridges another gateway archived to "
                "the shared bucket (needs [s3] gateway; takes each one's lease).")] = None,
            ) -> None:
    """Put cartridges from the vault into free mailslots (then 'vtl move' them to slots)."""
    from vtl import mailslots
    from vtl.library import DestinationFull, ElementType

    if from_ is not None:
        _import_from_store([b.upper() for b in barcodes], from_)
        return
    with open_library() as lib:
        barcodes = [b.upper() for b in barcodes]
        _check_all_known(lib, barcodes)
        for bc in barcodes:
            element = lib.where(bc)
            if element is not None:
                raise CliError(f"cartridge {bc} is already in the library ({element.name})")
        free = len(lib.free(ElementType.IMPORT_EXPORT))
        if len(barcodes) > free:
            raise DestinationFull(f"{len(barcodes)} cartridge(s) to import but {free} free mailslot(s)")
        done = [(bc, mailslots.import_cartridge(lib, bc).name) for bc in barcodes]
        say("imported " + ", ".join(f"{bc} -> {where}" for bc, where in done),
            {"imported": [{"barcode": bc, "to": where} for bc, where in done]})


def _import_from_store(barcodes: list[str], source: str) -> None:
    from vtl import archive as archives
    from vtl.cli.s3_access import object_store
    from vtl.shared_bucket import import_from_store

    if source != "s3":
        raise CliError(f"--from must be s3, not {source!r}")
    if len(set(barcodes)) != len(barcodes):
        raise CliError("a barcode is given twice")
    with open_library() as lib, object_store(lib, None) as (client, _bucket, _prefix):
        archives.settle(lib, client)
        done = []
        for bc in barcodes:
            element = import_from_store(lib, bc, client)
            done.append((bc, element.name if element is not None else "vault"))
        say("imported " + ", ".join(f"{bc} -> {where}" for bc, where in done),
            {"imported": [{"barcode": bc, "to": where} for bc, where in done]})


@app.command()
def archive(barcodes: Annotated[list[str], typer.Argument(
                help="Cartridge(s) in a slot, a mailslot or the vault (not in a drive).")],
            to: Annotated[str | None, typer.Option(
                "--to", metavar="s3://BUCKET/PREFIX",
                help="Where to (default: location in library.toml's [s3], or "
                     "$VTL_S3_LOCATION).")] = None,
            force: ForceOpt = False) -> None:
    """Move cartridges to the object store (multipart, checked) and free their local files;
    endpoint and keys from library.toml's [s3] table or the environment."""
    from vtl import archive as archives
    from vtl.cli.s3_access import object_store

    with open_library() as lib, object_store(lib, to) as (client, bucket, prefix):
        barcodes = [b.upper() for b in barcodes]
        _check_all_known(lib, barcodes)
        for bc in barcodes:
            _guard_backups(lib, bc, "archive it", force)
        archives.settle(lib, client)
        done = [archives.archive(lib, bc, client, bucket, prefix, lib.config.s3)
                for bc in barcodes]
        say("archived " + ", ".join(
            f"{r.barcode} -> {r.url} ({human_size(r.bytes_uploaded)} sent)" for r in done),
            {"archived": [asdict(r) for r in done]})


@app.command()
def retrieve(barcodes: Annotated[list[str], typer.Argument(help="Archived cartridge(s).")]
             ) -> None:
    """Bring archived cartridges back from the object store, checked, into free mailslots
    (the vault when none is free)."""
    from vtl import archive as archives
    from vtl.cli.s3_access import object_store

    with open_library() as lib, object_store(lib, None, need_location=False) as (
            client, _bucket, _prefix):
        barcodes = [b.upper() for b in barcodes]
        _check_all_known(lib, barcodes)
        archives.settle(lib, client)
        done = []
        for bc in barcodes:
            element = archives.retrieve(lib, bc, client)
            done.append((bc, element.name if element is not None else "vault"))
        say("retrieved " + ", ".join(f"{bc} -> {where}" for bc, where in done),
            {"retrieved": [{"barcode": bc, "to": where} for bc, where in done]})


def _check_all_known(lib: Any, barcodes: list[str]) -> None:
    if len(set(barcodes)) != len(barcodes):
        raise CliError("a barcode is given twice")
    for bc in barcodes:
        lib.cartridge(bc)


@app.command()
def erase(barcode: BarcodeArg, yes: YesOpt = False, force: ForceOpt = False) -> None:
    """Erase all data on a cartridge (refuses WORM and write-protected ones, and without
    --force one holding EBM backups still under retention)."""
    barcode = barcode.upper()
    from vtl import inventory

    with open_library() as lib:
        row = lib.cartridge(barcode)
        _guard_backups(lib, barcode, "erase it", force)
        if not yes:
            raise CliError(f"erasing {barcode} destroys its data; confirm with --yes")
        del row
        inventory.erase_cartridge(lib, barcode)
        say(f"erased {barcode}", {"barcode": barcode})


def _guard_backups(lib: Any, barcode: str, action: str, force: bool) -> None:
    """Refuse (or with --force warn about) a cartridge holding EBM backups under retention."""
    from vtl.backup_guard import check

    warning = check(lib.catalog.conn, barcode, action, force)
    if warning:
        sys.stderr.write(warning + "\n")


def _set_write_protect(barcode: str, on: bool) -> None:
    """``protect`` and ``unprotect`` differ only in which way the tab slides."""
    barcode = barcode.upper()
    from vtl import inventory

    with open_library() as lib:
        inventory.set_write_protect(lib, barcode, on)
        state = "write protected" if on else "writable"
        say(f"{barcode} is {state}", {"barcode": barcode, "write_protected": on})


@app.command()
def protect(barcode: BarcodeArg) -> None:
    """Set the write-protect tab."""
    _set_write_protect(barcode, True)


@app.command()
def unprotect(barcode: BarcodeArg) -> None:
    """Clear the write-protect tab."""
    _set_write_protect(barcode, False)


@app.command()
def worm(barcode: BarcodeArg) -> None:
    """Make a blank cartridge WORM (write once, read many)."""
    barcode = barcode.upper()
    from vtl import inventory

    with open_library() as lib:
        inventory.make_worm(lib, barcode)
        say(f"{barcode} is now WORM", {"barcode": barcode, "worm": True})


@app.command()
def delete(barcode: BarcodeArg, yes: YesOpt = False, force: ForceOpt = False) -> None:
    """Delete a cartridge and its file (one holding data needs --yes; one holding EBM
    backups still under retention, --force)."""
    barcode = barcode.upper()
    from vtl import inventory

    with open_library() as lib:
        lib.cartridge(barcode)  # an unknown barcode: that error first
        _guard_backups(lib, barcode, "delete it", force)
        inventory.delete_cartridge(lib, barcode, force=yes)
        say(f"deleted {barcode}", {"barcode": barcode})


@app.command()
def adopt(
    barcodes: Annotated[list[str] | None, typer.Argument(help="Cartridge file(s) to adopt.")]
    = None,
    all_: Annotated[bool, typer.Option("--all", help="Every file the catalog lacks.")] = False,
    vault: Annotated[bool, typer.Option("--vault", help="Put them in the vault.")] = False,
) -> None:
    """Take cartridge files the catalog does not know back into it (after a crash or a lost
    catalog): header, WORM, write protect and usage come from the file itself."""
    from vtl import inventory
    from vtl.barcode import parse_barcode
    from vtl.library import DestinationFull, DuplicateBarcode, ElementType

    with open_library() as lib:
        orphans = inventory.orphans(lib)
        if all_ and barcodes:
            raise CliError("give barcodes or --all, not both")
        wanted = orphans if all_ else [b.upper() for b in barcodes or []]
        if not wanted and not all_:
            raise CliError("give the barcodes to adopt, or --all")
        for bc in wanted:
            if bc in orphans:
                continue
            if lib.catalog.cartridge(bc) is not None:
                raise DuplicateBarcode(f"cartridge {bc} is already in the catalog")
            parse_barcode(bc)  # BadBarcode for a malformed label
            raise CliError(f"no cartridge file for {bc}")
        if not vault and len(wanted) > len(lib.free(ElementType.STORAGE)):
            raise DestinationFull(f"{len(wanted)} cartridge(s) need free slots (use --vault)")
        done = []
        for bc in wanted:
            element = inventory.adopt_cartridge(lib, bc, vault=vault)
            done.append({"barcode": bc, "location": element.name if element else "vault"})
        say(f"adopted {len(done)} cartridge(s)" +
            (": " + ", ".join(f"{d['barcode']}@{d['location']}" for d in done) if done else ""),
            {"adopted": done})


@app.command()
def state(
    barcode: BarcodeArg,
    new_state: Annotated[str, typer.Argument(metavar="STATE", help="scratch, append, full, "
                                             "used, recycle, purged, error, read-only, archive, "
                                             "disabled")],
    pool: Annotated[str | None, typer.Option(help="Also move it to this pool.")] = None,
) -> None:
    """Set a cartridge's media state (and pool), e.g. to clear 'error' after a good verify."""
    from vtl.catalog import STATES

    barcode = barcode.upper()
    if new_state not in STATES:
        raise CliError(f"unknown state {new_state!r} (one of: {', '.join(STATES)})")
    from vtl import inventory

    with open_library() as lib:
        inventory.set_state(lib, barcode, new_state, pool=pool)
        lib.catalog.log("state", barcode, detail={"state": new_state, "pool": pool})
        say(f"{barcode} is now {new_state}" + (f" in pool {pool}" if pool else ""),
            {"barcode": barcode, "state": new_state, "pool": pool})


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, int | float | str | bool) or obj is None:
        return obj
    return str(obj)


def _partition_paths(lib: Any, barcode: str) -> list[Any]:
    """The files of partitions 1.. of a cartridge (none if it has one partition, or if its
    header cannot be read: verify reports that itself)."""
    from tape_formats.cartridge import CartridgeError
    from vtl.library import LibraryError

    try:
        cart = lib.open_readonly(barcode)
    except (LibraryError, CartridgeError, OSError):
        return []
    try:
        return [cart.partition_path(n) for n in range(1, cart.partition_count)]
    finally:
        cart.close()


@app.command()
def verify(
    barcode: BarcodeArg,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Also rebuild the index sidecar.")]
    = False,
) -> None:
    """Walk every record of the cartridge file, and of each partition after the first, and
    check framing and checksums."""
    from tape_formats.cartridge import (
        CartridgeError,
        VerifyReport,
        rebuild_index,
        verify_cartridge,
    )
    from vtl.library import CartridgeMissing

    barcode = barcode.upper()
    with open_library() as lib:
        lib.cartridge(barcode)
        path = lib.cartridge_path(barcode)
        rebuilt = None
        if rebuild:
            with lib.held(barcode):  # CartridgeBusy while any process has it mounted
                rebuilt = rebuild_index(path)
                for extra in _partition_paths(lib, barcode):
                    rebuild_index(extra)
                cart = lib.open_readonly(barcode)
                try:
                    lib.record_stats(barcode, cart)
                finally:
                    cart.close()
        if not path.exists():
            raise CartridgeMissing(f"cartridge file {path} is missing")
        try:
            report = verify_cartridge(path)
        except CartridgeError as e:  # e.g. a damaged header: the walk cannot even start
            report = VerifyReport(path, errors=[str(e)])
        partitions = []  # partitions 1.. (their own files): verified the same way
        for number, extra in enumerate(_partition_paths(lib, barcode), start=1):
            try:
                part = verify_cartridge(extra)
            except (CartridgeError, OSError) as e:
                part = VerifyReport(extra, errors=[str(e)])
            partitions.append(part)
            report.errors += [f"partition {number}: {e}" for e in part.errors]
        row = lib.cartridge(barcode)
        damage, notes = list(report.errors), []
        in_use = lib.in_use(barcode)
        if report.torn_tail_bytes and in_use and damage:
            # the record another process is writing right now, not damage (a crash's torn
            # tail is cut when the next writer opens the library, before this runs)
            damage.pop()
            notes.append(f"the last {report.torn_tail_bytes} bytes are a record being written"
                         " (the cartridge is mounted by another process)")
        errors = list(damage)
        # The catalog is written at unmount; while mounted elsewhere it may lag behind.
        if not in_use and row["blocks"] != report.objects:
            errors.append(
                f"catalog says {row['blocks']} objects but the tape holds {report.objects}"
                " (verify --rebuild updates the catalog)"
            )
        data = _plain(report)
        data["partitions"] = [{"partition": n, **_plain(p)} for n, p in
                              enumerate(partitions, start=1)]
        data["errors"] = errors
        data["notes"] = notes
        data["ok"] = not errors
        data["barcode"] = barcode
        if rebuilt is not None:
            data["index_rebuilt_objects"] = rebuilt
        if damage:  # damage on tape (not a stale catalog): the medium is suspect
            lib.catalog.set_state(barcode, "error")
            lib.catalog.log("verify-failed", barcode, detail="; ".join(damage[:5]))
        if settings().json:
            emit_json(data)
        else:
            summary = (
                f"{barcode}: {report.objects} objects ({report.blocks} blocks, "
                f"{report.filemarks} filemarks), {human_size(report.native_bytes)} native, "
                f"{human_size(report.stored_bytes)} stored"
            )
            if rebuilt is not None:
                summary += f"; index rebuilt ({rebuilt} objects)"
            console().print(summary, markup=False)
            for n, p in enumerate(partitions, start=1):
                console().print(f"  partition {n}: {p.objects} objects ({p.blocks} blocks, "
                                f"{p.filemarks} filemarks), {human_size(p.native_bytes)} "
                                "native", markup=False)
            for e in errors:
                console().print(f"  {e}", markup=False)
            for n in notes:
                console().print(f"  note: {n}", markup=False)
            console().print("OK" if not errors else f"FAILED: {len(errors)} error(s)",
                            markup=False)
        if errors:
            raise typer.Exit(1)


def _partition_summary(part: Any, number: int) -> dict[str, Any]:
    """What ``inspect`` shows of a partition after the first (its own file and index)."""
    from vtl.library import tape_files as count_tape_files

    return {"partition": number, "path": str(part.path), "capacity": part.capacity,
            "objects": part.eod, "filemarks": part.filemarks_before(part.eod),
            "tape_files": count_tape_files(part), "used_bytes": part.used_bytes,
            "remaining_bytes": part.remaining_bytes}


@app.command()
def inspect(barcode: BarcodeArg) -> None:
    """The cartridge file's header, MAM attributes and index summary, and each further
    partition's."""
    from rich.table import Table

    from tape_formats.cartridge import HEADER_FLAG_WRITE_PROTECT
    from tape_formats.mam import MAM_ATTRIBUTES
    from vtl.library import tape_files as count_tape_files

    barcode = barcode.upper()
    with open_library(readonly=True) as lib:
        lib.cartridge(barcode)
        cart = lib.open_readonly(barcode)
        try:
            header = {
                "path": str(cart.path),
                "barcode": cart.barcode,
                "media": cart.media.name,
                "density_code": f"0x{cart.media.density_code:02X}",
                "capacity": cart.capacity,
                "worm": cart.worm,
                "write_protected": bool(cart._flags & HEADER_FLAG_WRITE_PROTECT),
                "uuid": getattr(cart, "uuid", b"").hex(),
                "created_ns": getattr(cart, "created_ns", None),
                "format_features": ",".join(f.name.lower() for f in cart.format_features)
                or "none",
            }
            mam = []
            for attr_id, fmt, value in cart.mam.items():
                meta = MAM_ATTRIBUTES.get(attr_id)
                if fmt == 0 and len(value) <= 8:
                    shown: Any = int.from_bytes(value, "big")
                else:
                    shown = value.decode("utf-8", "replace").rstrip(" \x00")
                mam.append({"id": f"0x{attr_id:04X}", "name": meta.name if meta else "?",
                            "value": shown})
            index = {
                "objects": cart.eod,
                "filemarks": cart.filemarks_before(cart.eod),
                "blocks": cart.eod - cart.filemarks_before(cart.eod),
                "tape_files": count_tape_files(cart),
                "used_bytes": cart.used_bytes,
                "remaining_bytes": cart.remaining_bytes,
                "native_bytes": sum(f.native_bytes for f in cart.tape_files()),
            }
            partitions = [_partition_summary(cart.partition(n), n)
                          for n in range(1, cart.partition_count)]
        finally:
            cart.close()
        if settings().json:
            emit_json({"header": header, "mam": mam, "index": index, "partitions": partitions})
            return
        sections = [("header", header), ("index", index)]
        sections += [(f"partition {p['partition']}", p) for p in partitions]
        for title, section in sections:
            t = Table(title=title, show_header=False)
            t.add_column("key")
            t.add_column("value")
            for k, v in section.items():
                t.add_row(k, str(v))
            console().print(t)
        t = Table(title="MAM attributes")
        for col in ("Id", "Name", "Value"):
            t.add_column(col)
        for a in mam:
            t.add_row(a["id"], a["name"], str(a["value"]))
        console().print(t)
