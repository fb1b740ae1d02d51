"""The project's optional C extensions; everything else about the package is in pyproject.toml.

Each extension speeds up a path whose pure-Python version stays in the package as the
fallback and the reference its tests compare against, so every one is ``optional``: without a
compiler or the Python headers (Debian's python3-dev) the build prints a warning and the
install goes on. Another extension is one more line in ``EXTENSIONS``.

``_paxfast`` links OpenSSL's libcrypto (its sha256) when pkg-config finds it (Debian's
libssl-dev): that adds ``pack_files``, ``scan_dir``, ``extract_files`` and ``Extractor``, the filesystem
translator's small files in one call on backup and on restore; without it the module builds
without those functions and the Python loops serve. It links SQLite (Debian's libsqlite3-dev)
when pkg-config finds it: that adds ``stage_rows``, the catalog's insert of a chunk of the file
index with the GIL released, which lets the EBM insert the index while a backup still writes
(ebm/catalog.py's IndexStager); without it the index goes in at the end.
"""

import shlex
import subprocess

from setuptools import Extension, setup


def _pkg(name: str, macro: str) -> dict:
    """Extension arguments for a library from pkg-config; {} when it is not installed."""
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", name], check=True,
                               capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    args = shlex.split(flags)
    return {
        "define_macros": [(macro, "1")],
        "include_dirs": [a[2:] for a in args if a.startswith("-I")],
        "library_dirs": [a[2:] for a in args if a.startswith("-L")],
        "libraries": [a[2:] for a in args if a.startswith("-l")],
    }


def _libs(*found: dict) -> dict:
    """The union of some _pkg results."""
    out: dict = {}
    for f in found:
        for k, v in f.items():
            out.setdefault(k, []).extend(v)
    return out


EXTENSIONS = [
    # the pax headers of a plain regular file (tape_formats/archive/writer.py) and the
    # filesystem translator's small files (translators/filesystem.py)
    Extension("tape_formats.archive._paxfast", ["tape_formats/archive/_paxfast.c"],
              optional=True, **_libs(_pkg("libcrypto", "EBM_HAVE_LIBCRYPTO"),
                                     _pkg("sqlite3", "EBM_HAVE_SQLITE"))),
    # READ(6)/WRITE(6) on the streaming fast paths (vtl/iscsi/stream_paths.py); the write
    # side's device call and cartridge append (vtl/scsi/ssc.py, tape_formats/cartridge.py)
    Extension("vtl._fastpath", ["vtl/_fastpath.c", "vtl/_fastpath_write.c",
                                "vtl/_fastpath_spin.c"],
              depends=["vtl/_fastpath_common.h"], optional=True),
    # a fixed-block command's records packed or decoded in one call (tape_formats/block_runs.py)
    Extension("tape_formats._blockruns", ["tape_formats/_blockruns.c"], optional=True),
    # a dedup cartridge's payload copies with the GIL released (tape_formats/store/stream_tail.py)
    Extension("tape_formats.store._streamfast", ["tape_formats/store/_streamfast.c"],
              optional=True),
]

setup(ext_modules=EXTENSIONS)
