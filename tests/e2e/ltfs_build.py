"""IBM's LTFS for the e2e guest: built once from the tarball in ../shared/third_party into
the e2e cache, and packed as an extra initramfs archive (binaries, plugins, config and the
host libraries they load) that the kernel unpacks over the base guest.

The build takes one to three minutes on two cores; it needs the Debian packages listed in
scripts/setup.sh (fuse, libxml2, icu, uuid, snmp development files) and an ``icu-config``
stand-in, since Debian 12 ships neither it nor an icu.pc that LTFS's configure looks for.
``ltfs_prefix()`` returns None (the test skips) when any of that is missing.

LTFS is built with SUPPORT_BUGGY_IFS, its switch for transports that lose the residual of a
short READ: the guest reaches the target through QEMU's libiscsi passthrough, which reports a
short block as a full transfer (the target sends the iSCSI underflow; the guest's sg sees
resid 0), and LTFS then trusts the ILI sense instead, as it does behind SAS bridges.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from .guest import CACHE, REPO, CpioWriter, Guest, _libraries, fetch_kernel, resolve_modules

# shared/ sits beside the clone (CI) or beside the folder of worktrees (a helper's worktree)
TARBALLS = sorted(p for up in (REPO.parent, REPO.parent.parent)
                  for p in (up / "shared" / "third_party").glob("ltfs-*.tar.gz"))
ICU_CONFIG = """#!/bin/sh
case "$1" in --cppflags) pkg-config --cflags icu-uc icu-i18n;; --ldflags) pkg-config --libs icu-uc icu-i18n;;
  --version) pkg-config --modversion icu-uc;; *) echo /usr/lib/x86_64-linux-gnu/icu/pkgdata.inc;; esac
"""
PKG_CONFIG_NEEDS = ("fuse", "libxml-2.0", "icu-uc", "uuid")
CFLAGS = "-DSUPPORT_BUGGY_IFS"


def why_not() -> str | None:
    """Why LTFS cannot be built here, or None."""
    if not TARBALLS:
        return "no ltfs-*.tar.gz in ../shared/third_party"
    for tool in ("autoreconf", "libtoolize", "make", "gcc", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (see scripts/setup.sh)"
    for pc in PKG_CONFIG_NEEDS:
        if subprocess.run(["pkg-config", "--exists", pc], check=False).returncode:
            return f"pkg-config finds no {pc} (see scripts/setup.sh)"
    return None


def ltfs_prefix() -> Path | None:
    """The installed LTFS (bin/mkltfs ...), building it on first use; None if it cannot be."""
    if why_not() is not None:
        return None
    tarball = TARBALLS[-1]
    key = hashlib.sha256(tarball.read_bytes() + CFLAGS.encode()).hexdigest()[:12]
    prefix = CACHE / f"ltfs-{key}"
    if (prefix / ".done").exists():
        return prefix
    work = CACHE / f"ltfs-build-{key}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(work, filter="data")
    shim = work / "shim"
    shim.mkdir()
    (shim / "icu-config").write_text(ICU_CONFIG)
    (shim / "icu-config").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "CFLAGS": CFLAGS}
    src = work / "ltfs"
    log = work / "build.log"
    with open(log, "w") as out:
        for cmd in (["./autogen.sh"], ["./configure", f"--prefix={prefix}"],
                    ["make", "-j2"], ["make", "install"]):
            r = subprocess.run(cmd, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, check=False)
            if r.returncode:
                raise RuntimeError(f"LTFS build step {cmd} failed; see {log}")
    (prefix / ".done").write_text(tarball.name)
    shutil.rmtree(work, ignore_errors=True)
    return prefix


def guest_with_ltfs(guest: Guest, prefix: Path, workdir: Path) -> Guest:
    """``guest`` with LTFS under ``prefix`` (same path in the guest) and its libraries, plus
    what ``ltfs`` needs to mount: the fuse module (``/lib/modules/extra-fuse.ko``, for the
    script to insmod) and fusermount."""
    cpio = CpioWriter()
    kroot, release = fetch_kernel()
    for name, blob in resolve_modules(kroot / "lib" / "modules" / release, ("fuse",)):
        cpio.file(f"lib/modules/extra-{name}.ko", blob, 0o644)
    cpio.file("usr/bin/fusermount", Path("/usr/bin/fusermount").read_bytes(), 0o4755)
    files: dict[str, Path] = {}
    for p in prefix.rglob("*"):
        top = p.relative_to(prefix).parts[0]
        if (not p.is_file() or p.name.endswith((".a", ".la", ".pc")) or p.name == ".done"
                or top in ("share", "include")):
            continue
        files[str(p)] = p
        if top in ("bin", "lib") and p.name != "ltfs_ordered_copy":  # a Python script
            for lib in _libraries(str(p)):
                files.setdefault(lib, Path(lib))
    for dest, src in sorted(files.items()):
        cpio.file(dest, src.read_bytes(), 0o755)
    initrd = workdir / "initrd-ltfs.img"
    initrd.write_bytes(guest.initrd.read_bytes() + gzip.compress(cpio.finish(), mtime=0))
    return Guest(kernel=guest.kernel, initrd=initrd, kernel_version=guest.kernel_version)
