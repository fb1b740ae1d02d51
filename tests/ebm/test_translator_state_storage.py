"""Translator states in the catalog: a state handed as a file goes in and comes back out a
chunk at a time (SQLite incremental blob I/O), JSON states and states of older catalogs still
decode, and the filesystem translator's state reaches the next incremental as a file."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from ebm_helpers import barcodes, make_library, write_tree

from ebm.controller import BackupRequest
from ebm.manager import encode_state, load_state
from translators.filesystem_state import STATE_MAGIC, state_dict


def test_a_file_state_round_trips_through_blob_io(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    cat = ebm.catalog
    blob = STATE_MAGIC + os.urandom(3 << 20)  # spans several blob chunks
    with tempfile.TemporaryFile() as f, cat.tx():
        f.write(blob)
        cat._store_state(7, f)
    assert cat.state_head(7) == ("blob", blob[:8])
    state = load_state(cat, 7)
    assert state.read() == blob
    assert load_state(cat, 8) is None


def test_json_and_older_states_still_decode(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    cat = ebm.catalog
    with cat.tx():
        cat._store_state(1, encode_state({"members": ["a"]}))  # zstd JSON, as today
        cat._store_state(2, '{"members": ["b"]}')  # TEXT, as an older EBM stored it
    assert load_state(cat, 1) == {"members": ["a"]}
    assert load_state(cat, 2) == {"members": ["b"]}


def test_filesystem_state_reaches_the_incremental_as_a_file(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {f"d{i % 3}/f{i}": b"x" * i for i in range(30)})
    full = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    state = load_state(ebm.catalog, full.id)
    assert isinstance(state, io.BufferedRandom) and state.read(len(STATE_MAGIC)) == STATE_MAGIC
    assert len(state_dict(state)) == 30 + 3 + 1
    (src / "d0/f0").write_bytes(b"changed")
    incr = ebm.backup(BackupRequest(dataset="ds"))
    assert incr.level == "incr"
    assert {f.path for f in ebm.catalog.files(incr.id)} == {"d0/f0"}  # rewritten in place
