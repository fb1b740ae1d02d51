"""``vtl``: the admin CLI for a virtual tape library (create it, manage cartridges, move them).

Global options come first (``vtl --root DIR status``); ``--json`` may go anywhere. Element
names are those ``vtl status`` shows: ``slot:N`` and ``mailslot:N`` count from 1, ``drive:N``
from 0 (as mtx does), or a raw element address.

Adding a command from another module (how ``vtl serve`` gets in): put a function
``register(app: typer.Typer) -> None`` in that module and add its name to
``OPTIONAL_COMMANDS`` below (``vtl.cli.serve`` is already listed). ``register`` does
``app.command("serve")(serve)``; raise exceptions freely inside - the root group prints them
as one ``error: ...`` line with the exit code of :mod:`vtl.cli.errors` (2 refused, nothing
changed; 1 failed). Use ``vtl.cli.common.settings().root`` / ``.json`` for the global options.
Start-up stays fast (``vtl --help`` well under 0.3 s): a command imports what it needs (the
library, rich tables, the iSCSI target) in its body, not at module level.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vtl.access import apply_umask
from vtl.cli import cartridge as cartridge_cmds
from vtl.cli.common import (
    CliError,
    Settings,
    drive_index,
    emit_json,
    open_library,
    say,
    settings,
)
from vtl.cli.completion import command as completion_command
from vtl.cli.errors import EPILOG
from vtl.cli.group import OneLineErrorsGroup
from vtl.cli.manpage import command as manpage_command
from vtl.cli.version import version_option
from vtl.config import DEFAULT_ROOT, ROOT_ENV, LibraryConfig

app = typer.Typer(
    cls=OneLineErrorsGroup,
    name="vtl",
    help="Manage a virtual tape library: its drives, slots, mailslots and cartridges.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
mailslot_app = typer.Typer(help="The import/export mailslots.", no_args_is_help=True)
pool_app = typer.Typer(help="Cartridge pools.", no_args_is_help=True)
app.add_typer(cartridge_cmds.app, name="cartridge")
app.add_typer(mailslot_app, name="mailslot")
app.add_typer(pool_app, name="pool")

# Modules that add commands with register(app); missing ones are skipped.
OPTIONAL_COMMANDS = ("vtl.cli.serve", "vtl.cli.catalog", "vtl.cli.lio", "vtl.cli.service",
                     "vtl.cli.target", "vtl.cli.web", "vtl.cli.store", "vtl.cli.faults")


app.command("completion")(completion_command("vtl"))
app.command("manpage")(manpage_command("vtl", "manage a virtual tape library"))


@app.callback()
def _global(
    ctx: typer.Context,
    root: Annotated[
        Path,
        typer.Option("--root", "-r", envvar=ROOT_ENV, help="Library directory.",
                     show_default=True),
    ] = Path(DEFAULT_ROOT),
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    _version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=version_option("vtl"),
        help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = Settings(root=root, json=json_out)
    apply_umask(root)  # files made from here on: the owner's only, or the library group's


@app.command()
def init(
    drives: Annotated[int, typer.Option(help="Number of tape drives.")] = 4,
    slots: Annotated[int, typer.Option(help="Number of storage slots.")] = 40,
    mailslots: Annotated[int, typer.Option(help="Number of import/export mailslots.")] = 4,
    media: Annotated[str, typer.Option(help="Default media for new cartridges.")] = "LTO-8",
    changer_model: Annotated[str, typer.Option(help="Changer identity.")] = "IBM-3573-TL",
    drive_model: Annotated[str | None, typer.Option(
        help="Drive identity; default: the IBM drive of --media's generation "
             "(LTO-8: IBM-ULT3580-TD8).")] = None,
    name: Annotated[str, typer.Option(help="Library name.")] = "vtl",
    serial_prefix: Annotated[str, typer.Option(help="Prefix of device serials.")] = "VTL",
    portal: Annotated[str, typer.Option(help="iSCSI portal HOST:PORT.")] = "127.0.0.1:3260",
    iqn: Annotated[str | None, typer.Option(help="iSCSI target IQN.")] = None,
    group: Annotated[str | None, typer.Option(
        help="Share the library with this group (directory 2750, files 0640); "
             "default: the owner only (0700/0600).")] = None,
    store: Annotated[str, typer.Option(
        help="Cartridge store: plain (a file per cartridge), dedup (chunks stored once "
             "per library, compressed), or s3://BUCKET/PREFIX (dedup whose chunks go to "
             "that bucket after each sync point, the local store a cache of them; reads "
             "fetch on demand; cartridge archive/retrieve; endpoint and keys from the "
             "environment or library.toml's [s3]); see docs/store-format.md.")] = "plain",
    cache_size: Annotated[str | None, typer.Option(
        help="With --store s3://...: local bytes of chunks kept once the bucket has them "
             "(e.g. 50GiB; least recently used go first); default: no limit.")] = None,
) -> None:
    """Create a new library (refuses a directory that already has one)."""
    from vtl.access import group_id, make_root
    from vtl.catalog import CATALOG_NAME
    from vtl.config import CONFIG_NAME, IscsiConfig
    from vtl.library import Library
    from vtl.media_compat import check_writable, drive_model_for

    root = settings().root
    if drive_model is None:
        try:
            drive_model = drive_model_for(media.upper())
        except ValueError:  # an unknown media: validate() below names it
            drive_model = "IBM-ULT3580-TD8"
    iscsi = IscsiConfig(portal=portal)
    iscsi.target_iqn = iqn or f"iqn.2026-01.org.vtl-ebm:{name.lower()}"
    from vtl.s3_settings import S3Settings

    s3 = S3Settings()
    if store.startswith("s3://"):  # a dedup library backed by that bucket
        s3.location, s3.upload, store = store, "auto", "dedup"
    if cache_size is not None:
        if not s3.location:
            raise CliError("--cache-size needs --store s3://BUCKET/PREFIX")
        from vtl.cli.formatting import parse_size

        s3.cache_size = parse_size(cache_size)
    config = LibraryConfig(
        name=name, drives=drives, slots=slots, mailslots=mailslots, media=media.upper(),
        changer_model=changer_model, drive_model=drive_model,
        serial_prefix=serial_prefix.upper(), iscsi=iscsi, store=store.lower(), s3=s3,
    )
    if group:
        group_id(group)  # UnknownGroup before anything is made: a refusal changes nothing
    config.validate()
    check_writable(config, config.media)  # --media LTO-9 --drive-model ...TD7 is refused
    taken = any((root / file).exists() for file in (CONFIG_NAME, CATALOG_NAME))
    if not root.exists() or (root.is_dir() and not taken):  # else Library.create refuses
        make_root(root, group)
    lib = Library.create(root, config)
    lib.close()
    if config.store == "dedup":
        from tape_formats.store.chunk_store import ChunkStore
        from vtl.inventory import STORE_DIR

        ChunkStore.create(root / STORE_DIR).close()
    say(
        f"created library {name!r} at {root}: {drives} drives, {slots} slots, "
        f"{mailslots} mailslots, {config.media}",
        {"root": str(root), "config": config.to_dict()},
    )


def _element_rows(lib: Any) -> list[dict[str, Any]]:
    from vtl.library import ElementType

    claims = lib.claims()
    rows = []
    for e in lib.elements():
        row: dict[str, Any] = {
            "element": e.name,
            "type": e.type.name.lower(),
            "address": e.address,
            "barcode": e.barcode,
            "media": e.media,
            "source": lib.element_name(e.source_address) if e.source_address else None,
        }
        if e.type == ElementType.DATA_TRANSFER:
            row["serial"] = lib.drives[e.index].serial
            claim = claims.get(e.index)
            row["claimed_by"] = f"{claim['owner']} (pid {claim['pid']})" if claim else None
            row["in_use"] = bool(e.barcode) and lib.in_use(e.barcode)
        rows.append(row)
    return rows


@app.command()
def status() -> None:
    """Show every element: transport, mailslots, drives (serials, loaded cartridges), slots;
    then capacity of the library and each pool: used, free, written and compression."""
    from vtl.capacity import capacity_totals, totals_line
    from vtl.cli.tables import Table

    with open_library(readonly=True) as lib:
        rows = _element_rows(lib)
        cfg = lib.config
        totals = capacity_totals(lib.catalog.cartridges())
        if settings().json:
            emit_json({"library": cfg.name, "root": str(lib.root), "changer": cfg.changer_model,
                       "drive_model": cfg.drive_model, "elements": rows, "capacity": totals})
            return
        table = Table(title=f"library {cfg.name} ({cfg.changer_model}, drives {cfg.drive_model})")
        for col in ("Element", "Address", "Barcode", "Media", "Source", "Serial", "Mounted",
                    "Claimed by"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["element"], str(r["address"]), r["barcode"] or "-", r["media"] or "",
                          r["source"] or "", r.get("serial") or "",
                          "yes" if r.get("in_use") else "", r.get("claimed_by") or "")
        table.print()
        full = sum(1 for r in rows if r["barcode"])
        vaulted = sum(1 for c in lib.catalog.cartridges() if c["address"] is None)
        print(f"{full} cartridge(s) in the library, {vaulted} in the vault")
        for name, t in [("library", totals["library"]),
                        *((f"pool {p}", v) for p, v in totals["pools"].items())]:
            print(totals_line(name, t))


@app.command()
def move(
    src: Annotated[str, typer.Argument(help="Source: address, slot:N, drive:N, mailslot:N or a barcode.")],
    dst: Annotated[str, typer.Argument(help="Destination: address, slot:N, drive:N, mailslot:N.")],
) -> None:
    """Move a cartridge between elements, as the changer's MOVE MEDIUM does."""
    with open_library() as lib:
        s = lib.resolve(src, allow_barcode=True)
        d = lib.resolve(dst)
        barcode = lib.element(s).barcode
        lib.move_medium(s, d)
        say(f"moved {barcode} {lib.element_name(s)} -> {lib.element_name(d)}",
            {"barcode": barcode, "from": lib.element_name(s), "to": lib.element_name(d)})


@app.command()
def load(
    barcode: Annotated[str, typer.Argument(help="Cartridge to load.")],
    drive: Annotated[str, typer.Argument(help="Drive number (0-based), drive:N or address.")],
) -> None:
    """Load a cartridge into a drive."""
    with open_library() as lib:
        barcode = barcode.upper()
        index = drive_index(lib, drive)
        src = lib.find(barcode)
        dst = f"drive:{index}"
        row = lib.cartridge(barcode)
        if row is not None and row.get("media"):
            from vtl.media_compat import check_readable

            check_readable(lib.config, row["media"], barcode)
        if src.name == dst:
            say(f"{barcode} is already in {dst}",
                {"barcode": barcode, "from": dst, "to": dst, "moved": False})
            return
        lib.load(barcode, index)
        say(f"loaded {barcode} from {src.name} into {dst}",
            {"barcode": barcode, "from": src.name, "to": dst, "moved": True})


@app.command()
def unload(
    drive: Annotated[str, typer.Argument(help="Drive number (0-based), drive:N or address.")],
) -> None:
    """Unload a drive: its cartridge goes back to its home slot (or the first free slot)."""
    with open_library() as lib:
        index = drive_index(lib, drive)
        barcode = lib.drives[index].barcode
        lib.unload(index)
        where = lib.find(barcode).name if barcode else "?"
        say(f"unloaded {barcode} from drive:{index} to {where}",
            {"barcode": barcode, "from": f"drive:{index}", "to": where})


@mailslot_app.command("empty")
def mailslot_empty() -> None:
    """Open the mailslot door: take every cartridge in the mailslots out (to the vault)."""
    with open_library() as lib:
        from vtl import mailslots

        taken = mailslots.empty_mailslots(lib)
        say(f"took {len(taken)} cartridge(s) out of the mailslots" +
            (f": {', '.join(taken)}" if taken else ""), {"barcodes": taken})


mailslot_app.command("open", help="Same as 'empty': take exported cartridges out.")(
    mailslot_empty
)


@pool_app.command("list")
def pool_list() -> None:
    """List pools and how many cartridges each holds."""
    from vtl.cli.tables import Table

    with open_library(readonly=True) as lib:
        counts: dict[str, int] = {}
        for c in lib.catalog.cartridges():
            counts[c["pool"]] = counts.get(c["pool"], 0) + 1
        pools = [{**p, "cartridges": counts.get(p["name"], 0)} for p in lib.catalog.pools()]
        if settings().json:
            emit_json(pools)
            return
        table = Table()
        for col in ("Pool", "Cartridges", "Media", "Retention days", "Description"):
            table.add_column(col)
        for p in pools:
            table.add_row(p["name"], str(p["cartridges"]), p["media"] or "",
                          "" if p["retention_days"] is None else str(p["retention_days"]),
                          p["description"])
        table.print()


@pool_app.command("create")
def pool_create(
    name: Annotated[str, typer.Argument(help="Pool name.")],
    description: Annotated[str, typer.Option(help="What the pool is for.")] = "",
    media: Annotated[str | None, typer.Option(help="Media the pool takes (LTO-8...).")] = None,
    retention_days: Annotated[int | None, typer.Option(help="Keep data this long.")] = None,
) -> None:
    """Create a pool."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise CliError(f"bad pool name {name!r} (letters, digits, . _ -)")
    if retention_days is not None and retention_days < 0:
        raise CliError("--retention-days must not be negative")
    with open_library() as lib:
        if name in {p["name"] for p in lib.catalog.pools()}:
            raise CliError(f"pool {name!r} already exists")
        if media is not None:
            from vtl.library import media_type

            media = media_type(media.upper()).name
        lib.catalog.add_pool(name, description, media=media, retention_days=retention_days)
        say(f"created pool {name}", {"pool": name})


@app.command()
def events(
    barcode: Annotated[str | None, typer.Option(help="Only this cartridge.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """The audit log: who moved, created, erased... which cartridge, when."""
    from vtl.cli.tables import Table

    with open_library(readonly=True) as lib:
        rows = lib.catalog.events(barcode.upper() if barcode else None, limit=max(1, limit))
        for r in rows:
            r["from"] = lib.element_name(r["src"]) if r["src"] is not None else None
            r["to"] = lib.element_name(r["dst"]) if r["dst"] is not None else None
        if settings().json:
            emit_json(rows)
            return
        table = Table()
        for col in ("Time", "Action", "Barcode", "From", "To", "Pid", "Detail"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["time"], r["action"], r["barcode"] or "", r["from"] or "",
                          r["to"] or "", str(r["pid"]), r["detail"] or "")
        table.print()


@app.command("config")
def show_config() -> None:
    """Show the library's configuration (library.toml)."""
    from vtl.config import LibraryConfig, dumps_toml

    cfg = LibraryConfig.load(settings().root)
    if settings().json:
        emit_json(cfg.to_dict())
    else:
        sys.stdout.write(dumps_toml(cfg.to_dict()))


def _register_optional() -> None:
    for name in OPTIONAL_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if e.name == name:  # the module is simply not there
                continue
            _register_broken(name, e)  # keep the rest of the CLI usable, say why on use
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


def _register_broken(module: str, error: ImportError) -> None:
    command = module.rsplit(".", 1)[-1]

    def broken() -> None:
        raise RuntimeError(f"'vtl {command}' is unavailable: {error}")

    app.command(command, help=f"(unavailable: {error})")(broken)


_register_optional()
