"""Builds the Linux guest the e2e tests boot: Debian's kernel plus a tiny busybox initramfs.

Why a home-made guest: the tests need the *real* Linux st/ch/sg drivers and the real mt-st,
mtx, GNU tar and sg3_utils talking to our target, but no root, no kernel modules on the host
and no disk image. Debian's stock kernel (unpacked from its .deb with ``dpkg -x``) boots in
qemu TCG; the initramfs carries busybox-static, the handful of SCSI/virtio modules and the
host's tape tools with their shared libraries. Everything is cached under
``.cache/e2e/`` keyed by the package versions, so only the first run downloads and packs.

Each run appends a second, tiny cpio archive (the kernel unpacks concatenated archives) that
holds the test script, so the cached base image never changes between tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("VTL_E2E_CACHE", REPO / ".cache" / "e2e"))

# The modules the guest needs; their dependencies are resolved from each .ko's modinfo.
MODULES = ("virtio_pci", "virtio_scsi", "scsi_mod", "st", "ch", "sg")

# Real tools copied from the host (with their libraries, via ldd), and the Debian packages
# they come from: the cache key includes those packages' versions.
TOOLS = (
    "/usr/bin/dash",
    "/usr/bin/mt",
    "/usr/sbin/mtx",
    "/usr/sbin/tapeinfo",
    "/usr/bin/tar",
    "/usr/bin/sha256sum",
    "/usr/bin/sg_inq",
    "/usr/bin/sg_turs",
    "/usr/bin/sg_map",
    "/usr/bin/sg_logs",
    "/usr/bin/sg_read_attr",
    "/usr/bin/sg_modes",
    "/usr/bin/sg_vpd",
    "/usr/bin/sg_raw",
    "/usr/bin/sg_requests",
    "/usr/bin/sg_reset",
    "/usr/bin/stenc",  # tape data encryption (skipped when the host lacks it)
)
TOOL_PACKAGES = ("busybox-static", "dash", "mt-st", "mtx", "tar", "coreutils", "sg3-utils",
                 "stenc")
BUSYBOX = "/bin/busybox"

# The part of /init that names the attached LUNs (E2E_HCTL, from the per-run
# /etc/e2e.env) under /dev/e2e: the busybox guest and the host-root guest share it.
NAME_LUNS = r"""[ -f /etc/e2e.env ] && . /etc/e2e.env
# E2E_HCTL lists the attached LUNs' SCSI addresses in attach order. Wait for each one's
# driver node, then name it by attach index: /dev/e2e/<i>-sg, <i>-nst (tape), <i>-sch
# (changer). Linux numbers st/sg devices in scan order, which need not be LUN order.
mkdir -p /dev/e2e
i=0; n=0
for hctl in $E2E_HCTL; do
  d=/sys/bus/scsi/devices/$hctl
  while [ $i -lt ${E2E_WAIT_SECS:-60} ]; do
    if [ -d $d/scsi_generic ]; then
      case "$(cat $d/type 2>/dev/null)" in
        1) [ -d $d/scsi_tape ] && break ;;
        8) [ -d $d/scsi_changer ] && break ;;
        *) break ;;
      esac
    fi
    sleep 1; i=$((i+1))
  done
  for x in $d/scsi_generic/sg* $d/scsi_changer/sch* $d/scsi_tape/nst[0-9]*; do
    [ -e "$x" ] || continue
    name=$(basename $x)
    case $name in nst*[alm]) continue ;; esac
    ln -sf /dev/$name /dev/e2e/$n-$(echo $name | tr -d 0-9)
  done
  [ -e /dev/e2e/$n-sg ] || echo "@@E2E-WARN LUN $n ($hctl) did not appear@@"
  n=$((n+1))
done
for dev in $E2E_WAIT_DEVS; do
  while [ ! -e /dev/$dev ] && [ $i -lt ${E2E_WAIT_SECS:-60} ]; do sleep 1; i=$((i+1)); done
  [ -e /dev/$dev ] || echo "@@E2E-WARN /dev/$dev did not appear@@"
done
ls -l /dev/e2e | grep -- '->' | sed 's/.* \([0-9]*-[a-z]*\) -> /\1 -> /'
"""

INIT_SCRIPT = r"""#!/bin/busybox sh
# Guest /init: mount the pseudo file systems, load the SCSI modules, wait for the devices the
# test asked for, run /test.sh and power off. Markers (@@...@@) let the host parse the log.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=256m tmpfs /tmp
echo "@@E2E-INIT@@ $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /etc/modules.load); do
  insmod /lib/modules/$m.ko || echo "@@E2E-WARN insmod $m failed@@"
done
""" + NAME_LUNS + r"""echo "@@E2E-READY@@ $(cut -d' ' -f1 /proc/uptime)s"
cd /tmp
. /etc/e2e-lib.sh
. /test.sh
echo "@@E2E-DONE@@ $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
"""

LIB_SCRIPT = r"""# Helpers for /test.sh. `step NAME 'shell command'` runs the command (bounded by a timeout),
# printing its combined output between markers together with its exit status, so the host
# can assert on each step separately. Steps run under dash, not busybox sh: Debian's busybox
# prefers its own applets over $PATH, and the tests must run the real mt, tar and sha256sum.
# STEP-TIME (the guest's uptime at both ends) tells a failure under load from a wrong answer.
step() {
  _name=$1; shift
  _began=$(cut -d' ' -f1 /proc/uptime)
  echo "@@STEP-BEGIN $_name@@"
  timeout ${E2E_STEP_TIMEOUT:-300} /usr/bin/dash -c "$*" 2>&1
  _rc=$?
  echo "@@STEP-END $_name rc=$_rc@@"
  echo "@@STEP-TIME $_name ${_began}s-$(cut -d' ' -f1 /proc/uptime)s@@"
  return 0
}
"""


@dataclass(frozen=True)
class Guest:
    """A bootable guest: kernel image and base initramfs (paths in the cache)."""

    kernel: Path
    initrd: Path
    kernel_version: str
    # More qemu arguments this guest needs on every boot (the host-root guest's -virtfs).
    qemu_args: tuple[str, ...] = ()


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(
        cmd, cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout


def _pkg_version(pkg: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", pkg]).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "absent"


def kernel_package() -> str:
    """The versioned kernel package that linux-image-amd64 currently depends on."""
    override = os.environ.get("VTL_E2E_KERNEL_PKG")
    if override:
        return override
    for attempt in range(2):
        try:
            out = _run(["apt-cache", "depends", "linux-image-amd64"])
        except (subprocess.CalledProcessError, FileNotFoundError):
            out = ""
        m = re.search(r"Depends:\s*(linux-image-[\w.+-]+-amd64)", out)
        if m:
            return m.group(1)
        # No package lists (a fresh CI container): use an already unpacked kernel if there
        # is one, else fetch the lists once and ask again.
        cached = sorted(CACHE.glob("kernel-*/.done"))
        if cached:
            return "linux-image-" + cached[-1].parent.name.removeprefix("kernel-")
        if attempt == 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=False, stdin=subprocess.DEVNULL)
    raise RuntimeError(
        "cannot find Debian's kernel package: `apt-cache depends linux-image-amd64` names none "
        "(set VTL_E2E_KERNEL_PKG=linux-image-<release>-amd64 to choose one)"
    )


def fetch_kernel() -> tuple[Path, str]:
    """Download (once) and unpack Debian's kernel; returns (unpacked root, kernel release)."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    pkg = kernel_package()
    release = pkg.removeprefix("linux-image-")
    root = CACHE / f"kernel-{release}"
    if (root / ".done").exists():
        return root, release
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        _run(["apt-get", "download", pkg], cwd=debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        raise RuntimeError(f"apt-get download {pkg} produced no .deb")
    # Unpack beside the final place and rename, so concurrent or interrupted runs never see
    # a half-unpacked kernel.
    tmp = root.with_name(f"{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
    (tmp / ".done").write_text(found[-1].name)
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:
        if not (root / ".done").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return root, release


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _module_index(moddir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in moddir.rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        index[name] = p
    return index


def _depends(blob: bytes) -> list[str]:
    """Reads the modinfo `depends=` field straight from the .modinfo section's strings."""
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", blob)
    if not m or not m.group(1):
        return []
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d]


def resolve_modules(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """Modules in load order (dependencies first), decompressed."""
    index = _module_index(moddir)
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_") for line in bfile.read_text().split()
        }
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in index:
            raise RuntimeError(f"kernel module {name} not found under {moddir}")
        blob = _read_module(index[name])
        for dep in _depends(blob):
            visit(dep)
        order.append((name, blob))

    for w in wanted:
        visit(w)
    return order


def _libraries(binary: str) -> list[str]:
    out = _run(["ldd", binary])
    libs = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


class CpioWriter:
    """Minimal cpio "newc" writer: all files owned by root, deterministic timestamps."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        namez = name.encode() + b"\x00"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(namez)
        self.buf.write(b"\x00" * (-(110 + len(namez)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def mkdir(self, path: str) -> None:
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, path: str, data: bytes, mode: int = 0o755) -> None:
        path = path.strip("/")
        if "/" in path:
            self.mkdir(path.rsplit("/", 1)[0])
        self._entry(path, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.buf.getvalue()
        return data + b"\x00" * (-len(data) % 512)


def pack_base(cpio: CpioWriter, init: str, moddir: Path, wanted: tuple[str, ...]) -> None:
    """Busybox, ``init`` as /init, the step helpers, and the ``wanted`` modules (with their
    dependencies, loaded in /etc/modules.load order): what every guest's initramfs holds."""
    cpio.file("bin/busybox", Path(BUSYBOX).read_bytes())
    cpio.file("init", init.encode())
    cpio.file("etc/e2e-lib.sh", LIB_SCRIPT.encode(), 0o644)
    modules = resolve_modules(moddir, wanted)
    for name, blob in modules:
        cpio.file(f"lib/modules/{name}.ko", blob, 0o644)
    cpio.file("etc/modules.load", "\n".join(n for n, _ in modules).encode() + b"\n", 0o644)


def _cache_key(release: str) -> str:
    h = hashlib.sha256()
    h.update(release.encode())
    for pkg in TOOL_PACKAGES:
        h.update(f"{pkg}={_pkg_version(pkg)}".encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def build_initramfs(kroot: Path, release: str) -> Path:
    """Packs (once per cache key) the base initramfs: busybox, modules, tools, /init."""
    out = CACHE / f"initrd-{release}-{_cache_key(release)}.cpio.gz"
    if out.exists():
        return out
    cpio = CpioWriter()
    for d in (
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/modules",
    ):
        cpio.mkdir(d)
    pack_base(cpio, INIT_SCRIPT, kroot / "lib" / "modules" / release, MODULES)
    files: dict[str, str] = {}
    for tool in TOOLS:
        if not Path(tool).exists():
            continue
        files[tool] = tool
        for lib in _libraries(tool):
            files[lib] = lib
    for dest, src in sorted(files.items()):
        cpio.file(dest, Path(src).read_bytes(), 0o755)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.rename(out)
    for stale in CACHE.glob(f"initrd-{release}-*.cpio.gz"):  # earlier builds of this guest
        if stale != out:
            stale.unlink(missing_ok=True)
    return out


def build_guest() -> Guest:
    """The cached guest (downloading and packing on first use)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    kroot, release = fetch_kernel()
    kernel = kroot / "boot" / f"vmlinuz-{release}"
    return Guest(kernel=kernel, initrd=build_initramfs(kroot, release), kernel_version=release)


def overlay(script: str, env: dict[str, str], files: dict[str, bytes] | None = None) -> bytes:
    """The per-run cpio appended to the base initramfs: /test.sh, /etc/e2e.env and ``files``
    (path in the initramfs: contents)."""
    cpio = CpioWriter()
    cpio.file("test.sh", script.encode(), 0o755)
    for path, data in (files or {}).items():
        cpio.file(path, data, 0o644)
    envtext = "".join(f"{k}='{v}'\n" for k, v in env.items())
    cpio.file("etc/e2e.env", envtext.encode(), 0o644)
    return gzip.compress(cpio.finish(), mtime=0)
