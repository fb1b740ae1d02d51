"""``ebm backup --exclude/--exclude-file`` (kept for the dataset's later runs), and a path
restore that gives the file's parent directories, and the ``--to`` directory it makes, their
recorded mode and times."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ebm_helpers import barcodes, make_library, run_cli, write_tree


def paths(root: Path, spec: str) -> set[str]:
    r = run_cli(root, "--json", "ls", spec)
    assert r.returncode == 0, r.stderr
    return {x["path"] for x in json.loads(r.stdout)}


def test_excludes_are_skipped_and_kept_for_later_runs(tmp_path: Path):
    root, src = tmp_path / "lib", tmp_path / "src"
    write_tree(src, {"keep.txt": b"k", "cache/big.bin": b"x" * 100, "a/tmp.swp": b"s",
                     "a/b/data.txt": b"d", "logs/x.log": b"l"})
    make_library(root, barcodes(2)).close()
    rules = tmp_path / "excludes"
    rules.write_text("# editor droppings\n*.swp\n\nlogs\n")
    r = run_cli(root, "backup", "home", "--source", str(src), "--pool", "pool",
                "--exclude", "cache", "--exclude-file", str(rules))
    assert r.returncode == 0, r.stderr
    got = paths(root, "home")
    assert {"keep.txt", "a/b/data.txt"} <= got
    assert not {"cache", "cache/big.bin", "a/tmp.swp", "logs", "logs/x.log"} & got
    write_tree(src, {"cache/new.bin": b"n", "a/new.txt": b"n"})
    assert run_cli(root, "backup", "home").returncode == 0  # same excludes, not repeated
    got = paths(root, "home")
    assert "a/new.txt" in got and "cache/new.bin" not in got
    # A path glob (with "/") matches from the source root only.
    r = run_cli(root, "backup", "home", "--exclude", "a/b")
    assert r.returncode == 0, r.stderr
    got = paths(root, "home")
    assert "a/b/data.txt" not in got and "cache/new.bin" in got
    r = run_cli(root, "backup", "home", "--exclude-file", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read exclude file")


def test_path_restore_gives_parents_their_recorded_metadata(tmp_path: Path):
    root, src = tmp_path / "lib", tmp_path / "src"
    write_tree(src, {"alice/docs/notes.txt": b"hello\n", "bob/x": b"x"})
    os.chmod(src / "alice", 0o751)
    os.chmod(src / "alice" / "docs", 0o755)
    os.chmod(src, 0o750)
    old = 1_600_000_000
    os.utime(src / "alice" / "docs", (old, old))
    os.utime(src / "alice", (old + 60, old + 60))
    os.utime(src, (old + 120, old + 120))
    make_library(root, barcodes(2)).close()
    assert run_cli(root, "backup", "home", "--source", str(src), "--pool", "pool").returncode == 0
    (src / "bob" / "y").write_bytes(b"y")  # an incremental above, parents from the baseline
    assert run_cli(root, "backup", "home").returncode == 0
    out = tmp_path / "r"
    r = run_cli(root, "restore", "home", "--to", str(out), "--path", "alice/docs/notes.txt")
    assert r.returncode == 0, r.stderr
    assert (out / "alice/docs/notes.txt").read_bytes() == b"hello\n"
    # the --to the restore made: the recorded root's mode, not the 0700 of ebm's 077 umask
    for rel, mode, mtime in ((".", 0o750, old + 120), ("alice", 0o751, old + 60),
                             ("alice/docs", 0o755, old)):
        st = os.stat(out / rel)
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert int(st.st_mtime) == mtime, rel
    assert not (out / "bob").exists()
    mine = tmp_path / "mine"  # a --to that exists keeps the mode its owner gave it
    mine.mkdir(mode=0o700)
    r = run_cli(root, "restore", "home", "--to", str(mine), "--path", "bob")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700 and (mine / "bob/y").exists()
