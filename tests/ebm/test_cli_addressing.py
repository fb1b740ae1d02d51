"""How ``ebm`` addresses backups and reports (``diff``, ``find`` too): the short id ``ebm list`` prints, ``latest``,
``DATASET@TIME`` (a time as listings print it) and ``DATASET@latest`` in show/ls/restore/verify;
an empty ``ls`` match is an empty list; ``--json`` errors as JSON objects; times as ISO 8601 with
the offset and modes as octal numbers, in tables and JSON; cron schedules with cron's own
semantics."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, run_cli, write_tree

from ebm.catalog import FileRow
from ebm.cli import _attribute_text, _change_json
from ebm.controller import RequestError, next_run
from ebm.diff import diff_views

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("addr") / "lib"
    src = root.parent / "src"
    write_tree(src, {"a/one.txt": b"one\n", "b/two.txt": b"two\n"})
    make_library(root, barcodes(2)).close()
    for step in range(2):
        if step:  # the second backup: one file changed, one added
            write_tree(src, {"b/two.txt": b"two, longer\n", "c/new.txt": b"new\n"})
            time.sleep(1.0)  # a later second: DATASET@TIME to the second names one backup
        r = run_cli(root, "backup", "home", "--source", str(src), "--pool", "pool")
        assert r.returncode == 0, r.stderr
    return root


def ids(root: Path) -> list[dict]:
    r = run_cli(root, "--json", "list")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_short_id_latest_and_dataset_at_time(library: Path):
    first, second = ids(library)
    short = first["uuid"][:8]  # what the table of `ebm list` shows
    for spec, want in ((short, first), ("latest", second), ("home@latest", second),
                       ("home", second), (f"home@{first['started']}", first)):
        r = run_cli(library, "--json", "show", spec)
        assert r.returncode == 0, (spec, r.stderr)
        assert json.loads(r.stdout)["uuid"] == want["uuid"], spec
    for command in (["ls", "latest"], ["verify", "latest"], ["ls", short]):
        r = run_cli(library, *command)
        assert r.returncode == 0, (command, r.stderr)
    r = run_cli(library, "restore", "latest", "--to", str(library.parent / "r"))
    assert r.returncode == 0, r.stderr
    assert (library.parent / "r" / "a" / "one.txt").read_bytes() == b"one\n"


def test_times_are_iso_with_offset_and_modes_octal(library: Path):
    first, second = ids(library)
    assert ISO.match(first["started"]) and ISO.match(first["finished"])
    assert first["started"] in run_cli(library, "list").stdout
    human = run_cli(library, "show", "latest").stdout
    assert f"started {second['started']}, finished {second['finished']}" in human
    (row,) = json.loads(run_cli(library, "--json", "ls", "latest", "a/one.txt").stdout)
    assert re.fullmatch(r"0[0-7]{3}", row["mode"]) and ISO.match(row["mtime"])
    line = run_cli(library, "ls", "latest", "a/one.txt").stdout.strip()
    assert line.split()[:4] == ["f", row["mode"], "4", row["mtime"]]
    hits = json.loads(run_cli(library, "--json", "find", "one.txt").stdout)
    assert hits[0]["mode"] == row["mode"] and hits[0]["started"] == first["started"]
    assert f"{row['mode']} " in run_cli(library, "find", "one.txt").stdout


def test_diff_shows_a_mode_change_as_numbers():
    def row(mode: int) -> FileRow:
        return FileRow("x", "file", 1, 0, mode, 0, 0, None, 0, 0, False)

    (c,) = diff_views({"x": row(0o100644)}, {"x": row(0o100600)})
    assert _attribute_text(c, "mode") == "mode 0644 -> 0600"
    assert _change_json(c) == {"change": "modified", "path": "x", "attributes": ["mode"],
                               "mode": "0600", "old_mode": "0644"}


def test_ls_of_nothing_is_an_empty_list(library: Path):
    r = run_cli(library, "--json", "ls", "latest", "no/such/*")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = run_cli(library, "ls", "latest", "no/such/*")
    assert r.returncode == 0 and r.stdout == ""


def test_json_errors_are_json_on_stdout_and_one_line_on_stderr(library: Path):
    r = run_cli(library, "--json", "show", "nosuch")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"ok": False, "error": r.stderr[len("error: "):].strip(),
                                    "exit_code": 2, "kind": "refused"}
    assert r.stderr.startswith("error: no backup or dataset 'nosuch'")
    r = run_cli(library, "show", "nosuch")
    assert r.stdout == "" and r.returncode == 2


def test_cron_semantics():
    t = dt.datetime(2026, 12, 3, 13, 0).timestamp()

    def at(spec: str) -> dt.datetime:
        return dt.datetime.fromtimestamp(next_run(spec, t))

    # Day of month OR day of week when both are restricted: Friday the 4th, not a Friday 13th.
    assert at("0 3 13 * 5") == dt.datetime(2026, 12, 4, 3, 0)
    assert at("@daily") == dt.datetime(2026, 12, 4, 0, 0)
    assert at("0 2 * * mon") == dt.datetime(2026, 12, 7, 2, 0)
    assert at("30 1 * jan *") == dt.datetime(2027, 1, 1, 1, 30)
    assert at("daily at 03:00") == dt.datetime(2026, 12, 4, 3, 0)
    for bad in ("0 2 * * xyz", "@sometimes", "0 0 30 2 *", "1 2 3"):
        with pytest.raises(RequestError):
            next_run(bad, t)


def test_diff_between_two_backups(library: Path):
    first, second = ids(library)
    r = run_cli(library, "--json", "diff", first["uuid"][:8], "latest")
    assert r.returncode == 0, r.stderr
    changes = {c["path"]: c for c in json.loads(r.stdout)}
    assert changes["c/new.txt"]["change"] == "added"
    assert changes["b/two.txt"]["change"] == "modified"
    assert "size" in changes["b/two.txt"]["attributes"]
    assert "a/one.txt" not in changes
    human = run_cli(library, "diff", "latest", first["uuid"][:8]).stdout
    assert "- c/new.txt" in human and "M b/two.txt" in human
    assert run_cli(library, "--json", "diff", "latest", "latest").stdout.strip() == "[]"


def test_find_lists_every_version_newest_first(library: Path):
    r = run_cli(library, "--json", "find", "two.txt")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["size"] for x in rows] == [len(b"two, longer\n"), len(b"two\n")]
    assert {x["path"] for x in json.loads(run_cli(library, "--json", "find", "*.txt").stdout)} \
        == {"a/one.txt", "b/two.txt", "c/new.txt"}
    assert json.loads(run_cli(library, "--json", "find", "c/*").stdout)[0]["path"] == "c/new.txt"
    assert run_cli(library, "--json", "find", "*.nope").stdout.strip() == "[]"
    r = run_cli(library, "find", "x", "--dataset", "nosuch")
    assert r.returncode == 2 and r.stderr.startswith("error: no dataset")


CALENDARS = ["Mon..Fri *-*-* 02:00", "*-*-01 03:30", "Sat,Sun 10:00", "*-*-* *:0/15",
             "Fri *-*-13 00:00", "*-02,08-1..3 12:00"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("spec", CALENDARS)
def test_oncalendar_forms_fire_when_systemd_would(spec: str):
    base = dt.datetime(2026, 12, 3, 13, 0)
    r = subprocess.run(["systemd-analyze", "calendar", "--iterations=3",
                        f"--base-time={base:%Y-%m-%d %H:%M:%S}", spec],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0 and "base-time" in r.stderr:
        pytest.skip("systemd-analyze without --base-time")
    assert r.returncode == 0, r.stderr
    want = [dt.datetime.strptime(" ".join(line.split()[-3:-1]), "%Y-%m-%d %H:%M:%S")
            for line in r.stdout.splitlines()
            if line.strip().startswith(("Next elapse:", "Iter. #"))]
    got, t = [], base.timestamp()
    for _ in want:
        t = next_run(spec, t)
        got.append(dt.datetime.fromtimestamp(t))
    assert got == want and len(want) == 3


def test_oncalendar_refusals():
    t = dt.datetime(2026, 12, 3, 13, 0).timestamp()
    for bad in ("2027-*-* 02:00", "*-*-* 02:00:30", "Funday 02:00"):
        with pytest.raises(RequestError):
            next_run(bad, t)


def test_a_short_id_of_decimal_digits_is_a_uuid_prefix(tmp_path: Path):
    """About 2% of the 8-hex-digit short ids `ebm list` prints are all decimal digits: they
    must find their backup, while short digit strings stay catalog ids."""
    from ebm.catalog import Catalog, CatalogError

    cat = Catalog(tmp_path / "c.sqlite")
    digits = cat.begin_backup("home", "full", None, "filesystem", {},
                              uuid="06548289-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
    other = cat.begin_backup("home", "full", None, "filesystem", {})
    assert cat.backup("06548289").uuid == digits.uuid
    assert cat.backup(str(other.id)).uuid == other.uuid
    assert cat.backup(other.id).uuid == other.uuid
    with pytest.raises(CatalogError, match="no backup"):
        cat.backup("99999999")
