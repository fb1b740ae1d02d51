"""The filesystem translator's streamed state: walk order, the merge with the parent's rows,
and incrementals from a parent state of format 1 (the JSON dict) still correct."""

from __future__ import annotations

import io
import os
from pathlib import Path

from tape_formats.archive import PaxReader, PaxWriter
from translators.filesystem import FilesystemTranslator, tree_manifest
from translators.filesystem_state import (
    STATE_FORMAT_V1,
    STATE_MAGIC,
    read_state,
    state_dict,
    walk_key,
)

NAMES = ["a", "a-c", "a.b", "b", "\udcff", "Z", "a b"]


def _tree(root: Path) -> None:
    for name in NAMES:
        (root / name).mkdir(parents=True)
        for sub in NAMES:
            (root / name / sub).write_bytes(name.encode("utf-8", "surrogateescape"))


def _backup(src: Path, state=None):
    buf = io.BytesIO()
    with PaxWriter(buf) as w:
        result = FilesystemTranslator().backup(str(src), state, w)
    return buf.getvalue(), result


def test_walk_order_is_walk_key_order(tmp_path):
    _tree(tmp_path)
    walked = [rel for rel, _ in FilesystemTranslator().scan(str(tmp_path), [])]
    assert walked == sorted(walked, key=walk_key)
    assert walked.index("a/Z") < walked.index("a-c")  # a directory's children before its next sibling


def test_state_streams_in_walk_order_and_round_trips(tmp_path):
    _tree(tmp_path)
    _, r0 = _backup(tmp_path)
    assert r0.state.read(len(STATE_MAGIC)) == STATE_MAGIC  # a temporary file, not bytes
    paths = [p for p, _ in read_state(r0.state)]
    r0.state.seek(0)
    assert [p for p, _ in read_state(r0.state.read())] == paths  # the same rows as bytes
    assert paths == sorted(paths, key=walk_key) and len(paths) == len(NAMES) ** 2 + len(NAMES) + 1
    st = os.lstat(tmp_path / "a" / "b")
    assert state_dict(r0.state)["a/b"] == [st.st_ino, st.st_size, st.st_mtime_ns,
                                            st.st_ctime_ns, st.st_mode]


def test_incremental_from_a_format_1_parent_state(tmp_path):
    """A catalog written before the streamed state hands a JSON dict: the next incremental
    reads it (sorted into walk order) and finds exactly what changed and what is gone."""
    src = tmp_path / "src"
    _tree(src)
    a0, r0 = _backup(src)
    v1 = {"format": STATE_FORMAT_V1, "entries": state_dict(r0.state)}
    (src / "b" / "a").write_bytes(b"changed!")
    for name in NAMES:
        (src / "a-c" / name).unlink()
    (src / "a-c").rmdir()
    (src / "new").write_bytes(b"n")
    a1, r1 = _backup(src, v1)
    written = sorted(e.path for e in r1.entries if not e.deleted)
    assert written == [".", "b/a", "new"]  # rewriting b/a in place leaves b as it was
    deleted = {e.path for e in r1.entries if e.deleted}
    assert deleted == {"a-c"} | {f"a-c/{n}" for n in NAMES}
    assert r1.level_hint == "incremental"
    out = tmp_path / "out"
    FilesystemTranslator().restore(PaxReader(io.BytesIO(a0)), out)
    FilesystemTranslator().restore(PaxReader(io.BytesIO(a1)), out)
    assert tree_manifest(out) == tree_manifest(src)
    assert state_dict(r1.state) == state_dict(_backup(src)[1].state)
