# ruff: noqa: B008  (typer declares options as argument defaults by design)
"""The ``ebm`` command line (typer + rich).

Errors follow the one policy of both CLIs (:mod:`vtl.cli.errors`, stated in ``--help``): one
line ``error: ...`` on stderr, exit 2 when the request was refused (bad arguments, an unknown
dataset, backup or pool) and exit 1 when a valid operation failed; never a traceback.
``--json`` prints machine-readable results. Long work (backup, restore, verify) shows a
progress bar with rate and ETA on a terminal. Start-up is kept short (``ebm --help`` well
under 0.3 s): the manager, the crypto and the tape code are imported by the commands that use
them, rich only when something is printed with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ebm.controller import BackupRequest, next_run, parse_schedule
from vtl.access import apply_umask
from vtl.cli.completion import command as completion_command
from vtl.cli.errors import EPILOG, CliError, OperationFailed
from vtl.cli.formatting import (
    human_duration,
    human_rate,
    human_size,
    human_time,
    iso_time,
    mode_text,
)
from vtl.cli.group import OneLineErrorsGroup
from vtl.cli.manpage import command as manpage_command
from vtl.cli.version import version_option
from vtl.config import default_root

if TYPE_CHECKING:
    from rich.console import Console

    from ebm.catalog import Backup, Catalog
    from ebm.manager import Ebm

app = typer.Typer(cls=OneLineErrorsGroup, name="ebm", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None, epilog=EPILOG,
                  help="Extensible backup manager: native backups onto the VTL's cartridges.")
dataset_app = typer.Typer(no_args_is_help=True, help="Datasets (what to back up).")
pool_app = typer.Typer(no_args_is_help=True, help="Cartridge pools for backups.")
schedule_app = typer.Typer(no_args_is_help=True, help="Backup schedules.")
catalog_app = typer.Typer(no_args_is_help=True, help="Catalog maintenance.")
app.add_typer(dataset_app, name="dataset")
app.add_typer(pool_app, name="pool")
app.add_typer(schedule_app, name="schedule")
app.add_typer(catalog_app, name="catalog")
app.command("completion")(completion_command("ebm"))
app.command("manpage")(manpage_command("ebm", "extensible backup manager for the VTL"))

def out() -> Console:
    """stdout; long paths and table rows stay on one line when piped (greppable)."""
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def errc() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def table(*columns: str) -> Any:
    """A listing's table: plain columns (vtl.cli.tables), so listings never import rich."""
    from vtl.cli.tables import Table

    return Table(*columns)


# The EBM's own modules, imported when a command first needs them (start-up stays fast).
def resolve(catalog: Catalog, spec: str) -> Backup:
    from ebm.restore import resolve as resolve_backup

    return resolve_backup(catalog, spec)


def check_target(target: Path, into_existing: bool = False) -> None:
    from ebm.restore import check_target as check

    check(target, into_existing)


def load_translator(name: str) -> Any:
    from ebm.manager import load_translator as load

    return load(name)


REMOTE_CONFIG = "ebm-remote.toml"  # ebm.remote.ebm_host.REMOTE_CONFIG, without importing it


class State:
    root: Path = default_root()
    json: bool = False
    remote: dict[str, Any] | None = None  # --library URL and its login (ebm.remote)
    _ebm: Ebm | None = None

    def ebm(self, *, readonly: bool = False) -> Ebm:
        """The EBM over ``--root``. ``readonly`` for commands that only look at backups: the
        backup catalog is opened ``mode=ro``, so they never create its tables or migrate it
        (only commands that change state do)."""
        from ebm.manager import Ebm

        e = self._ebm
        if e is None or e.root != Path(self.root) or e.readonly != readonly:
            if e is not None:
                e.close()
            self._ebm = Ebm(self.root, remote=self._remote_spec(), readonly=readonly)
        return self._ebm

    def _remote_spec(self) -> Any:
        """--library's remote library, else the one the catalog directory remembers."""
        if not self.remote and not (Path(self.root) / REMOTE_CONFIG).exists():
            return None  # a local library: the initiator is not even imported
        from ebm.remote import ebm_host

        try:
            if self.remote:
                spec = ebm_host.RemoteSpec.from_options(**self.remote)
                ebm_host.prepare_catalog_dir(Path(self.root))
                ebm_host.save_remote_config(Path(self.root), self.remote)
                return spec
            saved = ebm_host.load_remote_config(Path(self.root))
            return ebm_host.RemoteSpec.from_options(**saved) if saved else None  # type: ignore[arg-type]
        except ebm_host.RemoteSetupError as e:
            raise CliError(str(e)) from None


S = State()


@app.callback()
def main(
    root: Path = typer.Option(None, "--root", "-r",
                              help="library directory ($VTL_ROOT, else ./vtl-library)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    library: str = typer.Option(None, "--library", envvar="EBM_LIBRARY", metavar="URL",
                                help="a library on another host: iscsi://HOST[:PORT]/IQN[/LUN], "
                                     "or kernel devices /dev/sch0,/dev/nst0[,...] (then "
                                     "--catalog is the EBM's own catalog directory)"),
    catalog_dir: Path = typer.Option(None, "--catalog", envvar="EBM_CATALOG", metavar="DIR",
                                     help="with --library: the EBM's catalog directory"),
    chap_file: Path = typer.Option(None, "--chap-file",
                                   help="with --library: a 0600 file, user:secret (and "
                                        "mutual_user:mutual_secret on line 2)"),
    initiator_name: str = typer.Option(None, "--initiator-name",
                                       help="with --library: our iSCSI initiator name"),
    digests: bool = typer.Option(False, "--digests", help="with --library: CRC32C digests"),
    _version: bool = typer.Option(False, "--version", is_eager=True,
                                  callback=version_option("ebm"), help="print the version and exit"),
) -> None:
    S.root = root or default_root()
    S.json = json_out
    S.remote = None
    if catalog_dir is not None and not library:
        S.root = catalog_dir  # its ebm-remote.toml names the library (ebm.remote.ebm_host)
        if not (catalog_dir / REMOTE_CONFIG).exists():
            raise CliError(f"{catalog_dir} remembers no remote library: give --library "
                           "iscsi://... once")
    if library:
        if catalog_dir is None:
            raise CliError("--library needs --catalog DIR (the EBM's own catalog directory)")
        S.root = catalog_dir
        S.remote = {"url": library, "chap_file": chap_file, "initiator_name": initiator_name,
                    "digests": digests}
    apply_umask(S.root)  # files made from here on: the owner's only, or the library group's


def emit(data: Any, human: Callable[[], None]) -> None:
    if S.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


def backup_json(b: Backup) -> dict[str, Any]:
    """A backup for ``--json``: its catalog fields, times as ISO 8601 (``iso_time``)."""
    return {**b.to_json(), "started": iso_time(b.started), "finished": iso_time(b.finished)}


def _summary_rate(nbytes: int, secs: float) -> str:
    """`` (12.5 MiB/s)`` after a summary's size and duration, as the progress bar showed it."""
    return f" ({human_rate(nbytes / secs)})" if secs > 0 else ""


@contextlib.contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich bar with rate and ETA, only on a terminal and not with --json. Sizes and rate in
    the units of every summary (``vtl.cli.formatting``: MiB, MiB/s), not rich's decimal MB."""
    if S.json or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn

    class Bytes(ProgressColumn):
        def render(self, task: Any) -> Any:
            total = f" / {human_size(int(task.total))}" if task.total is not None else ""
            return f"{human_size(int(task.completed))}{total}"

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Any:
            return human_rate(task.speed)

    cols = [TextColumn(what), BarColumn(), Bytes(), Rate(), TimeRemainingColumn()]
    with Progress(*cols, console=errc(), transient=True) as p:
        task = p.add_task(what, total=None)
        last = [0.0]

        def cb(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] > 0.1:
                p.update(task, completed=done, total=total)
                last[0] = now

        yield cb


def none_yet(catalog: Catalog) -> bool:
    """Say so (on a terminal, not with --json) when the library holds no EBM tables yet:
    a read-only command does not create them."""
    if catalog.has_tables:
        return False
    if not S.json:
        print("no EBM backups yet")
    return True


def listing_catalog(dataset: str | None) -> Catalog | None:
    """The catalog for a read-only listing, checked: None (an empty list already emitted) when
    the library holds no EBM tables yet, a usage error when DATASET is unknown."""
    cat = S.ebm(readonly=True).catalog
    if none_yet(cat):
        emit([], lambda: None)
        return None
    if dataset and cat.dataset(dataset) is None:
        raise CliError(f"no dataset {dataset!r}")
    return cat


def printable_path(path: str) -> str:
    """A name fit for the terminal (bytes that are not UTF-8 escaped); deferred import."""
    from tape_formats.archive.entry import printable_path as printable

    return printable(path)


def _rules(last: int, daily: int, weekly: int, monthly: int) -> dict[str, int]:
    r = {"keep_last": last, "keep_daily": daily, "keep_weekly": weekly, "keep_monthly": monthly}
    return {k: v for k, v in r.items() if v}


def _secret(passphrase_file: Path | None, key_file: Path | None) -> bytes | None:
    """The key material given by file or ``$EBM_PASSPHRASE`` (never an argument: ps shows
    those), or None."""
    from ebm.crypto import PASSPHRASE_ENV, read_secret

    if passphrase_file is None and key_file is None and not os.environ.get(PASSPHRASE_ENV):
        return None
    return read_secret(passphrase_file, key_file)


DRIVE_KEY_HELP = ("with --library: the drive encrypts (SSC-4, AES-256-GCM) with this key "
                  "(32 bytes, or 64 hex digits); kept on no disk, its signature in the catalog")


def _drive_key(path: Path) -> Any:
    """The drive's key from ``--drive-key-file`` (``ebm.remote.drive_encryption``)."""
    from ebm.remote.drive_encryption import read_drive_key

    return read_drive_key(path)


def _check_drive_key(ebm: Ebm, path: Path | None, backups: list[Backup]) -> None:
    """Refuse to read backups the drive encrypted without their key, before any drive is
    touched; with the right key, hand it to the remote library."""
    key = _drive_key(path) if path is not None else None
    ebm.check_drive_key(backups, key)
    if key is not None:
        ebm.use_drive_key(key)


# -- backup --------------------------------------------------------------------------------
def _exclude_lines(path: Path | None) -> list[str]:
    """The globs of an ``--exclude-file``: one per line, blank lines and ``#`` comments skipped."""
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read exclude file {path}: {getattr(e, 'strerror', None) or e}"
                       ) from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@app.command()
def backup(
    dataset: str = typer.Argument(..., help="dataset name (created on first use)"),
    source: Path = typer.Option(None, "--source", help="what to back up (first use)"),
    translator: str = typer.Option(None, "--translator", help="translator plugin (default filesystem)"),
    pool: str = typer.Option(None, "--pool", help="cartridge pool"),
    full: bool = typer.Option(False, "--full", help="force a baseline"),
    encrypt: bool = typer.Option(False, "--encrypt", help="AES-256-GCM (needs a key)"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP),
    verify: bool = typer.Option(False, "--verify", help="read back and check afterwards"),
    no_compress: bool = typer.Option(False, "--no-compress", help="turn drive compression off"),
    retries: int = typer.Option(1, "--retries", min=0, help="retries of a failed translator"),
    keep_last: int = typer.Option(0, "--keep-last", min=0, help="then forget all but the last N"),
    keep_daily: int = typer.Option(0, "--keep-daily", min=0),
    keep_weekly: int = typer.Option(0, "--keep-weekly", min=0),
    keep_monthly: int = typer.Option(0, "--keep-monthly", min=0),
    exclude: list[str] = typer.Option(None, "--exclude", metavar="GLOB",
                                      help="skip matching paths (name glob, or path glob with /; "
                                           "repeat); kept for the dataset's next runs"),
    exclude_file: Path = typer.Option(None, "--exclude-file", metavar="FILE",
                                      help="one exclude glob per line (# comments)"),
) -> None:
    """Back up DATASET (baseline if it has none, else incremental); optional retention after."""
    options: dict[str, Any] = {}
    if exclude or exclude_file:
        options["exclude"] = [*(exclude or []), *_exclude_lines(exclude_file)]
    req = BackupRequest(dataset=dataset, source=source, translator=translator, pool=pool,
                        full=full, encrypt=encrypt, passphrase_file=passphrase_file,
                        key_file=key_file, verify=verify, compress=not no_compress,
                        retention=_rules(keep_last, keep_daily, keep_weekly, keep_monthly),
                        options=options)
    req.validate()
    ebm = S.ebm()
    if drive_key_file is not None:
        ebm.use_drive_key(_drive_key(drive_key_file))
    t0 = time.monotonic()
    with progress_bar(f"backup {dataset}") as cb:
        b = ebm.backup(req, progress=cb, retries=retries)
    secs = time.monotonic() - t0
    result: dict[str, Any] = {**backup_json(b), "seconds": round(secs, 3),
                              "volumes": [v.barcode for v in ebm.catalog.volumes(b.id)]}
    if verify:
        from ebm.verify import verify_backup

        secret = _secret(passphrase_file, key_file)
        with progress_bar("verify") as cb:
            vr = verify_backup(ebm.catalog, ebm.library, b, secret, cb)
        result["verify"] = {"ok": vr.ok, "problems": vr.problems}
    why_full = b.options.get("full_reason") if b.level == "full" else None
    emit(result, lambda: out().print(
        f"backup {b.uuid} ({b.level}) of {dataset}: {b.nfiles} entries, {human_size(b.size)} in "
        f"{human_duration(secs)}{_summary_rate(b.size, secs)} on {', '.join(result['volumes'])}"
        + ("" if not verify else (" - verified OK" if result["verify"]["ok"] else " - VERIFY FAILED"))
        + (f"\nfull: {why_full}" if why_full else ""), highlight=False, markup=False))
    warns = b.options.get("warnings") or []
    if warns and not S.json:
        errc().print(f"{len(warns)} warning(s):", markup=False)
        for w in warns[:10]:
            errc().print(f"  {printable_path(w)}", markup=False, highlight=False)
    if verify and not result["verify"]["ok"]:
        raise OperationFailed("; ".join(result["verify"]["problems"]))


@app.command()
def consolidate(
    dataset: str = typer.Argument(..., help="dataset whose latest chain becomes one baseline"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    no_compress: bool = typer.Option(False, "--no-compress", help="turn drive compression off"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP),
) -> None:
    """Build a new baseline of DATASET from its chain on tape (a synthetic full), without
    reading the source; `ebm forget` can then expire the old chain."""
    from ebm.consolidate import consolidate as do_consolidate

    ebm = S.ebm()
    drive_key = _drive_key(drive_key_file) if drive_key_file is not None else None
    t0 = time.monotonic()
    with progress_bar(f"consolidate {dataset}") as cb:
        b = do_consolidate(ebm, dataset, passphrase_file=passphrase_file, key_file=key_file,
                           compress=not no_compress, progress=cb, drive_key=drive_key)
    secs = time.monotonic() - t0
    result = {**backup_json(b), "seconds": round(secs, 3),
              "volumes": [v.barcode for v in ebm.catalog.volumes(b.id)]}
    emit(result, lambda: out().print(
        f"backup {b.uuid} (full) of {dataset}: {b.nfiles} entries, {human_size(b.size)} in "
        f"{human_duration(secs)}{_summary_rate(b.size, secs)} on {', '.join(result['volumes'])}\nfull: {b.options['full_reason']}",
        highlight=False, markup=False))


# -- datasets and pools --------------------------------------------------------------------
@dataset_app.command("add")
def dataset_add(
    name: str,
    source: Path = typer.Option(..., "--source"),
    translator: str = typer.Option("filesystem", "--translator"),
    pool: str = typer.Option(..., "--pool"),
    keep_last: int = typer.Option(0, "--keep-last", min=0, help="retention after each backup"),
    keep_daily: int = typer.Option(0, "--keep-daily", min=0),
    keep_weekly: int = typer.Option(0, "--keep-weekly", min=0),
    keep_monthly: int = typer.Option(0, "--keep-monthly", min=0),
) -> None:
    """Register a dataset: what to back up, with which translator, into which pool."""
    req = BackupRequest(dataset=name, source=source, translator=translator, pool=pool,
                        retention=_rules(keep_last, keep_daily, keep_weekly, keep_monthly))
    req.validate()
    ebm = S.ebm()
    if ebm.catalog.dataset(name) is not None:
        raise CliError(f"dataset {name!r} already exists")
    ebm.ensure_dataset(req)
    emit({"dataset": name}, lambda: out().print(f"dataset {name} added"))


@dataset_app.command("list")
def dataset_list() -> None:
    """List datasets."""
    ebm = S.ebm(readonly=True)
    if none_yet(ebm.catalog):
        emit([], lambda: None)
        return
    rows = [dict(r) for r in ebm.catalog.datasets()]
    for r in rows:
        last = ebm.catalog.last_good(r["name"])
        r["last_backup"] = last.uuid if last else None
        r["last_time"] = iso_time(last.started) if last else None
        # a dataset property: every backup of it is encrypted (see Ebm.dataset_secret)
        r["encrypted"] = bool(json.loads(r["options"] or "{}").get("encryption")
                              or (last is not None and last.encrypted))

    def human() -> None:
        t = table("name", "translator", "source", "pool", "encrypted", "last backup")
        for r in rows:
            t.add_row(r["name"], r["translator"], r["source"], r["pool"] or "-",
                      "yes" if r["encrypted"] else "no", r["last_time"] or "never")
        t.print()
    emit(rows, human)


@pool_app.command("create")
def pool_create(name: str,
                retention_days: int = typer.Option(
                    None, "--retention-days", min=0,
                    help="keep backups at least N days; older ones expire after each backup"),
                description: str = typer.Option("EBM backup pool", "--description")) -> None:
    """Create a cartridge pool (the library's pools: `vtl pool list` shows it too)."""
    S.ebm().catalog.create_pool(name, description, retention_days=retention_days)
    emit({"pool": name, "retention_days": retention_days},
         lambda: out().print(f"pool {name} created"))


@pool_app.command("add")
def pool_add(name: str, barcodes: list[str]) -> None:
    """Add cartridges (by barcode) to a pool; they must exist in the library."""
    ebm = S.ebm()
    if ebm.remote is not None:
        ebm.library  # noqa: B018 - a remote library's barcodes enter the local catalog
    ebm.catalog.add_to_pool(name, *barcodes)  # all or none
    emit({"pool": name, "added": barcodes},
         lambda: out().print(f"added {len(barcodes)} cartridge(s) to pool {name}"))


@pool_app.command("list")
def pool_list() -> None:
    """Pools (the library's) and the EBM's cartridges in them (state, append point)."""
    cat = S.ebm(readonly=True).catalog
    rows = [dict(r) for r in cat.pool_media()]
    pools = cat.pools()
    days = {p: cat.pool(p)["retention_days"] for p in pools}

    def human() -> None:
        t = table("pool", "retention", "barcode", "state", "append at", "busy")
        for p in pools:
            keep = f"{days[p]} d" if days[p] is not None else "-"
            members = [r for r in rows if r["pool"] == p]
            if not members:
                t.add_row(p, keep, "-", "-", "-", "-")
            for r in members:
                t.add_row(p, keep, r["barcode"], r["state"], str(r["append_at"]),
                          str(r["busy"] or ""))
        t.print()
    emit({"pools": pools, "retention_days": days, "media": rows}, human)


# -- listing -------------------------------------------------------------------------------
@app.command("list")
def list_backups(dataset: str = typer.Argument(None), all_states: bool = typer.Option(
        False, "--all", help="include failed and expired backups")) -> None:
    """List backups (good ones; --all for failed/expired too)."""
    cat = listing_catalog(dataset)
    if cat is None:
        return
    bs = cat.backups(dataset, None if all_states else ["done", "running"])

    def human() -> None:
        t = table("id", "uuid", "dataset", "level", "started", "size", "entries", "state")
        for b in bs:
            t.add_row(str(b.id), b.uuid[:8], b.dataset, b.level, human_time(b.started), human_size(b.size),
                      str(b.nfiles), b.state + (" (enc)" if b.encrypted else ""))
        t.print()
    emit([backup_json(b) for b in bs], human)


@app.command()
def show(backup_spec: str = typer.Argument(..., metavar="BACKUP")) -> None:
    """Show one backup: chain, volumes, state."""
    cat = S.ebm(readonly=True).catalog
    b = resolve(cat, backup_spec)
    vols = cat.volumes(b.id)
    chain = [c.uuid for c in cat.chain(b)] if b.state == "done" else []
    data = {**backup_json(b), "chain": chain,
            "volumes": [{k: getattr(v, k) for k in v.__slots__} for v in vols]}

    def human() -> None:
        out().print(f"backup {b.uuid} (id {b.id}) of {b.dataset}: {b.level}, {b.state}")
        out().print(f"  started {human_time(b.started)}, finished {human_time(b.finished)}")
        out().print(f"  {b.nfiles} entries, {human_size(b.size)} stream, {b.blocks} blocks, stream digest {b.sha256}")
        if b.encrypted:
            out().print("  encrypted (AES-256-GCM, scrypt)")
        if b.level == "full" and b.options.get("full_reason"):
            out().print(f"  full: {b.options['full_reason']}", markup=False, highlight=False)
        if b.error:
            out().print(f"  error: {printable_path(b.error)}", markup=False, highlight=False)
        for w in (b.options.get("warnings") or [])[:20]:
            out().print(f"  warning: {printable_path(w)}", markup=False, highlight=False)
        out().print(f"  chain: {' -> '.join(c[:8] for c in chain)}")
        for v in vols:
            out().print(f"  volume {v.seq}: {v.barcode} tape files {v.first_file}-{v.last_file}, "
                      f"objects {v.first_object}-{v.last_object}, blocks {v.first_block}-{v.last_block}")
    emit(data, human)


@app.command()
def diff(old: str = typer.Argument(..., metavar="BACKUP_A"),
         new: str = typer.Argument(..., metavar="BACKUP_B")) -> None:
    """What changed from BACKUP_A to BACKUP_B (+ added, - removed, M modified), from the
    catalog alone."""
    from ebm.diff import diff_backups

    cat = S.ebm(readonly=True).catalog
    a, b = resolve(cat, old), resolve(cat, new)
    for x in (a, b):
        if x.state != "done":
            raise CliError(f"backup {x.uuid} is {x.state}")
    changes = diff_backups(cat, a, b)
    marks = {"added": "+", "removed": "-", "modified": "M"}

    def human() -> None:
        for c in changes:
            what = f"  ({', '.join(_attribute_text(c, k) for k in c.what)})" if c.what else ""
            out().print(f"{marks[c.change]} {printable_path(c.path)}{what}",
                        highlight=False, markup=False)
    emit([_change_json(c) for c in changes], human)


def _attribute_text(c: Any, key: str) -> str:
    """``mode 0644 -> 0600`` for a changed mode (the number, as ``ebm ls`` prints it), else the
    attribute's name."""
    if key == "mode" and c.old is not None and c.new is not None:
        return f"mode {mode_text(c.old.mode)} -> {mode_text(c.new.mode)}"
    return key


def _change_json(c: Any) -> dict[str, Any]:
    """One ``ebm diff --json`` entry: its mode in B (in A when removed), and A's when it
    changed."""
    row = c.new or c.old
    data = {"change": c.change, "path": c.path, "attributes": list(c.what),
            "mode": mode_text(row.mode) if row else None}
    if "mode" in c.what and c.old is not None:
        data["old_mode"] = mode_text(c.old.mode)
    return data


@app.command()
def find(pattern: str = typer.Argument(..., help="a name glob (*.txt) or a path glob (a/*.txt)"),
         dataset: str = typer.Option(None, "--dataset", help="only this dataset")) -> None:
    """Every stored version of the files matching PATTERN in the good backups, newest first."""
    from ebm.diff import find as find_versions

    cat = listing_catalog(dataset)
    if cat is None:
        return
    hits = find_versions(cat, pattern, cat.backups(dataset, ["done"]))
    data = [{"path": r.path, "kind": r.kind, "size": r.size, "mode": mode_text(r.mode),
             "mtime": iso_time(r.mtime_ns / 1e9), "backup": b.uuid[:8], "dataset": b.dataset,
             "started": iso_time(b.started)} for b, r in hits]

    def human() -> None:
        for b, r in hits:
            out().print(f"{b.uuid[:8]} {b.dataset} {human_time(b.started)}  {mode_text(r.mode)} "
                        f"{r.size:>12} {human_time(r.mtime_ns / 1e9)} {printable_path(r.path)}",
                        highlight=False, markup=False)
    emit(data, human)


@app.command()
def ls(backup_spec: str = typer.Argument(..., metavar="BACKUP"),
       path: str = typer.Argument(None, help="glob or directory"),
       positions: bool = typer.Option(False, "--positions",
                                      help="show cartridge, tape file, block, byte of each entry")) -> None:
    """List the files of a backup as of its point in the chain."""
    from ebm.restore import final_view, matches

    cat = S.ebm(readonly=True).catalog
    b = resolve(cat, backup_spec)
    if b.state != "done":
        raise CliError(f"backup {b.uuid} is {b.state}")
    view = final_view(cat, cat.chain(b), [path] if path else None)
    rows = sorted((r for p, r in view.items() if matches(p, [path] if path else [])),
                  key=lambda r: r.path)
    pos: dict[str, Any] = {}
    if positions:
        for bid in {r.backup for r in rows}:
            pos.update({(bid, p): v for p, v in cat.positions(bid).items()})
    data = [{"path": r.path, "kind": r.kind, "size": r.size, "mode": mode_text(r.mode),
             "mtime": iso_time(r.mtime_ns / 1e9), "backup": r.backup,
             **({"position": dict(zip(("cartridge", "tape_file", "block", "byte", "object"),
                                      pos.get((r.backup, r.path), ()), strict=False))}
                if positions else {})} for r in rows]

    def human() -> None:
        for r in rows:
            where = ""
            if positions and (r.backup, r.path) in pos:
                bc, tf, blk, byte, _obj = pos[(r.backup, r.path)]
                where = f"  [{bc} file {tf} block {blk} +{byte}]"
            out().print(f"{r.kind[0] if r.kind != 'hardlink' else 'h'} {mode_text(r.mode)} "
                      f"{r.size:>12} {human_time(r.mtime_ns / 1e9)} {printable_path(r.path)}{where}",
                      highlight=False, markup=False)
    emit(data, human)


# -- restore / verify ----------------------------------------------------------------------
@app.command()
def restore(
    spec: str = typer.Argument(..., metavar="BACKUP|DATASET[@TIME]"),
    to: Path = typer.Option(..., "--to", help="target directory"),
    path: list[str] = typer.Option(None, "--path", help="path or glob (repeatable)"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP),
    into_existing: bool = typer.Option(
        False, "--into-existing", "--force",
        help="restore into a non-empty --to (paths the backup holds are replaced, others kept)"),
    lsn: str = typer.Option(None, "--lsn", help="recover to this WAL position, e.g. 0/3000060 "
                            "(translators with a WAL catalogue: postgresql)"),
    form: str = typer.Option(None, "--as", help="restore form: physical (default) or csv "
                             "(postgresql's logical export)"),
    wal_local: bool = typer.Option(
        False, "--wal-local", help="postgresql: put the chain's WAL into pg_wal now, instead "
        "of restore_command fetching it from tape (for a host without access to the library)"),
) -> None:
    """Restore a backup (its whole chain point), or only matching paths, into --to.

    For a postgresql dataset DATASET@TIME (or --lsn) is a point in time: the data directory
    recovers to exactly that point when PostgreSQL starts on it, fetching the WAL it replays
    from tape through `ebm wal-fetch` (its restore_command), or from pg_wal with --wal-local.
    --to must be empty (or not exist) unless --into-existing is given."""
    from ebm.restore import restore as do_restore

    ebm = S.ebm(readonly=True)  # the backup catalog is only read
    b, options = _restore_point(ebm, spec, lsn, form)
    check_target(to, into_existing)  # before reading keys or touching a drive
    secret = _secret(passphrase_file, key_file)
    _check_drive_key(ebm, drive_key_file, ebm.catalog.chain(b))
    if options is not None and options.get("form") == "physical":
        _wal_from_tape(ebm, b, options, wal_local, passphrase_file, key_file, drive_key_file)
    elif wal_local:
        raise CliError("--wal-local is for a physical postgresql restore")
    t0 = time.monotonic()
    with progress_bar(f"restore {b.uuid[:8]}") as cb:
        st = do_restore(ebm.catalog, ebm.library, load_translator, b, to, list(path or []),
                        secret, cb, into_existing=into_existing, options=options)
    secs = time.monotonic() - t0
    emit({"backup": b.uuid, "chain": st.backups, "entries": st.entries, "bytes": st.bytes,
          "blocks_read": st.blocks_read, "seconds": round(secs, 3)},
         lambda: out().print(f"restored {st.entries} entries ({human_size(st.bytes)}) from "
                           f"{len(st.backups)} backup(s) into {to} in {human_duration(secs)}"
                           f"{_summary_rate(st.bytes, secs)}, {st.blocks_read} blocks read"))


def _wal_from_tape(ebm: Ebm, b: Backup, options: dict[str, Any], wal_local: bool,
                   *key_files: Path | None) -> None:
    """Tell the translator how the restored server fetches WAL: ``ebm wal-fetch`` on this
    catalog (with the same key files, by absolute path), unless ``--wal-local``."""
    if wal_local:
        return
    from ebm.wal_fetch import fetch_options

    options.update(fetch_options(ebm.root, ebm.catalog, b))
    for flag, path in zip(("--passphrase-file", "--key-file", "--drive-key-file"), key_files,
                          strict=True):
        if path is not None:
            options["wal_fetch"] += [flag, str(path.absolute())]


@app.command("wal-fetch")
def wal_fetch(
    backup_spec: str = typer.Argument(..., metavar="BACKUP", help="the restored backup (its "
                                      "chain is searched)"),
    name: str = typer.Argument(..., metavar="NAME", help="WAL file name (restore_command's %f)"),
    dest: Path = typer.Argument(..., metavar="PATH", help="where to write it (%p)"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP),
    spool: Path = typer.Option(None, "--spool", metavar="DIR", help="prefetch spool (default: "
                               "pg_wal/ebm-prefetch beside PATH)"),
    prefetch_mb: int = typer.Option(256, "--prefetch-mb", min=0, help="read up to this many "
                                    "MB of the following segments in the same tape pass"),
) -> None:
    """PostgreSQL's restore_command: one WAL file of a backup's chain from tape to PATH.

    Written by `ebm restore` into the restored data directory. The segments after it go to
    a spool in the same tape pass, for the next calls (`python -m ebm.wal_spool` serves them
    without the tape). Exit status is what PostgreSQL expects of a restore_command: 0
    fetched (sha256 checked, written atomically), 1 not in the chain (the end of the
    archive), 126 any other failure (recovery stops)."""
    from ebm.wal_fetch import EXIT_FATAL, EXIT_NOT_IN_CHAIN, WalNotInChain, fetch, locate
    from ebm.wal_spool import WalSpool, spool_root

    chain_spool = None
    try:
        ebm = S.ebm(readonly=True)
        b = ebm.catalog.backup(backup_spec)
        chain_spool = WalSpool(spool_root(str(dest), str(spool) if spool else None), b.uuid)
        locate(ebm.catalog, b, name)  # "not in the chain" before anything heavy is loaded
        secret = _secret(passphrase_file, key_file)
        _check_drive_key(ebm, drive_key_file, ebm.catalog.chain(b))
        fetch(ebm.catalog, ebm.library, b, name, dest, secret,
              chain_spool if prefetch_mb else None, prefetch_mb << 20)
    except WalNotInChain as e:
        if chain_spool is not None:
            chain_spool.discard()  # the end of the archive (or of recovery): nothing to keep
        sys.stderr.write(f"ebm wal-fetch: {e}\n")
        raise typer.Exit(EXIT_NOT_IN_CHAIN) from None
    except Exception as e:  # any failure must stop recovery, in one line
        sys.stderr.write(f"error: wal-fetch {name}: {e}\n")
        raise typer.Exit(EXIT_FATAL) from None


def _restore_point(ebm: Ebm, spec: str, lsn: str | None,
                   form: str | None) -> tuple[Any, dict[str, Any] | None]:
    """The backup to restore and, for a translator that restores to points in its WAL
    (``ebm.points``), the options saying which point and in which form."""
    from ebm.points import resolve_point, restores_to_points
    from ebm.restore import parse_time

    name, _, at = spec.partition("@")
    ds = ebm.catalog.dataset(name)
    translator = load_translator(ds["translator"]) if ds is not None else None
    if translator is not None and restores_to_points(translator):
        if at and lsn:
            raise CliError("give DATASET@TIME or --lsn, not both")
        return resolve_point(ebm.catalog, name, translator, when=parse_time(at) if at else None,
                             lsn=lsn, form=form or "physical")
    b = resolve(ebm.catalog, spec)
    translator = translator or load_translator(b.translator)
    if restores_to_points(translator):
        return b, {"form": form or "physical"}
    if lsn or form:
        raise CliError(f"--lsn and --as need a translator with a WAL catalogue (postgresql), "
                       f"not {b.translator}")
    return b, None


@app.command()
def verify(
    spec: str = typer.Argument(None, metavar="[BACKUP|DATASET]"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP),
) -> None:
    """Read backups back: block checksums, file sha256s, trailer vs catalog."""
    from ebm.verify import verify_backup

    ebm = S.ebm(readonly=True)  # results are reported, not recorded in the catalog
    cat = ebm.catalog
    if spec is None and none_yet(cat):
        emit([], lambda: None)
        return
    if spec is None:
        targets = cat.backups(states=["done"])
    elif cat.dataset(spec) is not None:
        targets = cat.backups(spec, states=["done"])
    else:
        targets = [resolve(cat, spec)]
    secret = _secret(passphrase_file, key_file)
    _check_drive_key(ebm, drive_key_file, targets)
    results = []
    for b in targets:
        with progress_bar(f"verify {b.uuid[:8]}") as cb:
            results.append(verify_backup(cat, ebm.library, b, secret, cb))
    bad = [r for r in results if not r.ok]

    def human() -> None:
        for r in results:
            out().print(f"{r.backup}: " + ("OK" if r.ok else "FAILED: " + printable_path(
                "; ".join(r.problems))),
                      highlight=False, markup=False)
    emit([{"backup": r.backup, "ok": r.ok, "problems": r.problems, "entries": r.entries,
           "bytes": r.bytes} for r in results], human)
    if bad:
        raise OperationFailed(f"{len(bad)} of {len(results)} backup(s) failed verification: "
                       + bad[0].problems[0])


@app.command()
def forget(
    dataset: str = typer.Argument(None),
    keep_last: int = typer.Option(0, "--keep-last", min=0),
    keep_daily: int = typer.Option(0, "--keep-daily", min=0),
    keep_weekly: int = typer.Option(0, "--keep-weekly", min=0),
    keep_monthly: int = typer.Option(0, "--keep-monthly", min=0),
    dry_run: bool = typer.Option(False, "--dry-run"),
) -> None:
    """Expire backups no retention rule keeps (never breaking a kept chain); recycle cartridges.

    A dataset's pool with --retention-days N adds "keep what is younger than N days"."""
    from ebm.retention import Policy
    from ebm.retention import forget as do_forget

    policy = Policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    cat = S.ebm().catalog
    if policy.empty() and not any(cat.pool(p)["retention_days"] for p in cat.pools()):
        raise CliError("give at least one --keep-* rule, or give a pool --retention-days "
                       "(forgetting everything is not a default)")
    if dataset and cat.dataset(dataset) is None:
        raise CliError(f"no dataset {dataset!r}")
    r = do_forget(cat, policy, dataset, dry_run)
    emit({"kept": [b.uuid for b in r.kept], "expired": [b.uuid for b in r.expired],
          "recycled": r.recycled, "dry_run": dry_run},
         lambda: out().print(f"kept {len(r.kept)}, {'would expire' if dry_run else 'expired'} "
                           f"{len(r.expired)}, recycled {len(r.recycled)} cartridge(s)"
                           + (f": {', '.join(r.recycled)}" if r.recycled else "")))


# -- schedules -----------------------------------------------------------------------------
@schedule_app.command("add")
def schedule_add(dataset: str, spec: str = typer.Argument(..., help="'daily at 03:00', 'hourly', cron ..."),
                 full: bool = typer.Option(False, "--full", help="always a baseline"),
                 verify_opt: bool = typer.Option(False, "--verify"),
                 passphrase_file: Path = typer.Option(None, "--passphrase-file"),
                 key_file: Path = typer.Option(None, "--key-file"),
                 drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                                     help=DRIVE_KEY_HELP + "; the file's path "
                                                     "is kept, read at each run")) -> None:
    """Schedule backups of DATASET (an encrypted dataset needs its key file here; a dataset
    backed up with the drive's encryption needs --drive-key-file)."""
    ebm = S.ebm()
    ds = ebm.catalog.dataset(dataset)
    if ds is None:
        raise CliError(f"no dataset {dataset!r} (add it with `ebm dataset add`)")
    parse_schedule(spec)
    req = BackupRequest(dataset=dataset, passphrase_file=passphrase_file, key_file=key_file)
    req.validate()
    ebm.dataset_secret(ds, req)  # an encrypted dataset's schedule without (the right) key: refused
    if drive_key_file is not None:
        ebm.use_drive_key(_drive_key(drive_key_file))  # a readable key, a remote library
    ebm.check_dataset_drive_key(ds)  # a drive-encrypted dataset without its key: refused
    opts = {"full": full, "verify": verify_opt,
            "passphrase_file": str(passphrase_file.resolve()) if passphrase_file else None,
            "key_file": str(key_file.resolve()) if key_file else None,
            "drive_key_file": str(drive_key_file.resolve()) if drive_key_file else None}
    nr = next_run(spec, time.time())
    sid = ebm.catalog.add_schedule(dataset, spec, opts, nr)
    emit({"id": sid, "next_run": iso_time(nr)},
         lambda: out().print(f"schedule {sid}: {dataset} {spec!r}, next run {human_time(nr)}"))


@schedule_app.command("list")
def schedule_list() -> None:
    """List schedules."""
    cat = S.ebm(readonly=True).catalog
    if none_yet(cat):
        emit([], lambda: None)
        return
    rows = [{**dict(r), "next_run": iso_time(r["next_run"]), "last_run": iso_time(r["last_run"])}
            for r in cat.schedules()]

    def human() -> None:
        t = table("id", "dataset", "schedule", "next run", "last run", "last result")
        for r in rows:
            t.add_row(str(r["id"]), r["dataset"], r["spec"], r["next_run"] or "-",
                      r["last_run"] or "-", r["last_result"] or "-")
        t.print()
    emit(rows, human)


@schedule_app.command("remove")
def schedule_remove(sid: int) -> None:
    S.ebm().catalog.remove_schedule(sid)
    emit({"removed": sid}, lambda: out().print(f"schedule {sid} removed"))


@app.command()
def scheduler(
    once: bool = typer.Option(False, "--once", help="run what is due and exit (systemd timer)"),
    max_jobs: int = typer.Option(2, "--max-jobs", min=1, help="parallel backups"),
    interval: float = typer.Option(30.0, "--interval", min=0.1, help="seconds between checks"),
) -> None:
    """Run due scheduled backups, up to --max-jobs at once, each in its own process."""
    from ebm.scheduler import run_scheduler

    stop = {"flag": False}

    def _stop(*_a: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    ran = run_scheduler(S.ebm(), S.root, once=once, max_jobs=max_jobs, interval=interval,
                        should_stop=lambda: stop["flag"], log=lambda m: errc().print(m, markup=False))
    emit({"ran": ran}, lambda: out().print(f"ran {len(ran)} job(s)"))


# -- catalog -------------------------------------------------------------------------------
@catalog_app.command("rebuild")
def catalog_rebuild(
    passphrase_file: Path = typer.Option(None, "--passphrase-file"),
    key_file: Path = typer.Option(None, "--key-file"),
    barcode: list[str] = typer.Option(None, "--barcode", help="only these cartridges"),
    drive_key_file: Path = typer.Option(None, "--drive-key-file", metavar="FILE",
                                        help=DRIVE_KEY_HELP + "; cartridges written with the "
                                        "drive's encryption are read with it"),
) -> None:
    """Rebuild the backup catalog from the cartridges (headers, data extents, trailers)."""
    from ebm.rebuild import rebuild

    ebm = S.ebm()
    secret = _secret(passphrase_file, key_file)
    if drive_key_file is not None:
        ebm.use_drive_key(_drive_key(drive_key_file))
    r = rebuild(ebm.catalog, ebm.library, secret, list(barcode) if barcode else None)
    emit({"backups": r.backups, "skipped": r.skipped, "cartridges": r.cartridges},
         lambda: out().print(f"scanned {r.cartridges} cartridge(s): {len(r.backups)} backup(s) "
                           f"added, {len(r.skipped)} skipped"
                           + "".join(f"\n  skipped {s}" for s in r.skipped), markup=False))


@catalog_app.command("compact")
def catalog_compact() -> None:
    """Drop unused path rows and vacuum the catalog."""
    S.ebm().catalog.compact()
    emit({"ok": True}, lambda: out().print("catalog compacted"))
