"""``vtl catalog ...``: check the catalog, copy it, restore a copy, rebuild it from tape.

The catalog file holds both the media catalog and the EBM's backup catalog, so each of
these covers both (see :mod:`vtl.catalog_backup` and :mod:`vtl.catalog_recovery`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vtl.cli.common import console, emit_json, open_library, say, settings

if TYPE_CHECKING:
    from vtl.catalog_recovery import Recovery

app = typer.Typer(help="The catalog file: check, back up, restore, rebuild from the cartridges.",
                  no_args_is_help=True)


def register(root_app: typer.Typer) -> None:
    root_app.add_typer(app, name="catalog")


@app.command()
def check() -> None:
    """Check the catalog file (read-only): exit 0 if it is whole, else one error line."""
    with open_library(readonly=True) as lib:
        with lib.catalog.lock:
            result = lib.catalog.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            from vtl.catalog import damaged_message
            from vtl.errors import CatalogDamaged

            raise CatalogDamaged(damaged_message(lib.catalog.path, f"damaged ({result})"))
        say(f"media catalog {lib.catalog.path} is whole "
            f"({len(lib.catalog.cartridges())} cartridge(s))",
            {"catalog": str(lib.catalog.path), "ok": True})


@app.command()
def backup() -> None:
    """Take a backup copy of the catalog now (the newest few are kept)."""
    with open_library() as lib:
        copy = lib.back_up_catalog()
        say(f"copied the catalog to {copy}", {"copy": str(copy)})


@app.command("backups")
def list_backups() -> None:
    """The backup copies of the catalog, newest first."""
    from vtl.catalog_backup import copies
    from vtl.cli.formatting import iso_time

    found = []
    for p in copies(settings().root):
        st = p.stat()
        found.append({"path": str(p), "bytes": st.st_size, "time": iso_time(st.st_mtime)})
    if settings().json:
        emit_json(found)
        return
    for f in found:
        console().print(f"{f['time']}  {f['path']}  {f['bytes']} bytes", markup=False)
    console().print(f"{len(found)} backup cop{'y' if len(found) == 1 else 'ies'}",
                    markup=False)


PassphraseOpt = Annotated[Path | None, typer.Option(
    "--passphrase-file", help="Passphrase of encrypted backups (their file index is on tape, "
    "encrypted).")]


def _secret(passphrase_file: Path | None) -> bytes | None:
    if passphrase_file is None:
        return None
    from ebm.crypto import read_secret

    return read_secret(passphrase_file)


@contextmanager
def _no_server() -> Iterator[None]:
    """Hold the server's lock while the catalog file is swapped: refuses while `vtl serve`
    runs on this library (it would go on writing the file set aside), and keeps one from
    starting meanwhile. No directory, no lock: the recovery then says there is no library."""
    from vtl.cli.serve import ServeLock

    if not settings().root.is_dir():
        yield
        return
    lock = ServeLock(settings().root)
    try:
        yield
    finally:
        lock.release()


@app.command()
def restore(
    source: Annotated[Path | None, typer.Option("--from", help="This copy instead of the "
                                                "newest good one.")] = None,
    passphrase_file: PassphraseOpt = None,
) -> None:
    """Put the newest good backup copy in place of a missing or damaged catalog, then catch
    it up with the cartridges (what was written since, new cartridge files, their backups).
    The old file is kept as catalog.sqlite.damaged-TIME."""
    from vtl.catalog_recovery import restore as restore_catalog

    secret = _secret(passphrase_file)
    with _no_server():
        rec = restore_catalog(settings().root, source, secret)
    say(f"restored the catalog from {rec.source}: {len(rec.updated)} cartridge(s) caught up, "
        f"{len(rec.cartridges)} taken in, {len(rec.backups)} backup(s) found on tape"
        + (f", {len(rec.skipped)} skipped ({'; '.join(rec.skipped)})" if rec.skipped else ""),
        rec.to_json())


@app.command()
def rebuild(
    force: Annotated[bool, typer.Option("--force", help="Rebuild a healthy catalog too "
                                        "(its events and schedules are lost).")] = False,
    passphrase_file: PassphraseOpt = None,
    from_bucket: Annotated[bool, typer.Option(
        "--from-bucket", help="Then add the cartridges archived in the library's [s3] "
        "location that have no file here (every gateway's), as archived.")] = False,
) -> None:
    """Rebuild the media catalog AND the backup catalog from the cartridge files alone
    (barcodes, media, WORM, usage, last known places, tape files, EBM backups), and with
    --from-bucket the cartridges in the object store."""
    from vtl.catalog_recovery import rebuild as rebuild_catalog

    secret = _secret(passphrase_file)
    with _no_server():
        rec = rebuild_catalog(settings().root, secret=secret, force=force)
        if from_bucket:
            _adopt_from_bucket(rec)
    say(f"rebuilt the catalog: {len(rec.cartridges)} cartridge(s), {len(rec.backups)} "
        "backup(s)" + (f", {len(rec.skipped)} skipped ({'; '.join(rec.skipped)})"
                       if rec.skipped else ""),
        rec.to_json())


def _adopt_from_bucket(rec: Recovery) -> None:
    """The bucket's cartridges without a local file, as archived rows (vtl/shared_bucket.py)."""
    from vtl.cli.s3_access import object_store
    from vtl.shared_bucket import adopt_archived

    with open_library() as lib, object_store(lib, None) as (client, _bucket, _prefix):
        found, skipped = adopt_archived(lib, client)
        lib.back_up_catalog()
    rec.cartridges.update(found)
    rec.skipped.extend(skipped)
