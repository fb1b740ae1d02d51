"""A guest with a full userland: Debian's kernel, and this machine's own root over 9p.

The LIO tests need more than busybox: the project's venv (Python, rtslib-fb), the kernel's
target modules, and the tape tools, all in one guest. Rather than build a disk image, the
guest mounts the host's ``/`` read-only over virtio-9p, puts tmpfs over the places that must
be writable (``/tmp``, ``/run``, ``/var/tmp``, ``/dev/shm``; not ``/root``, where pyenv may
keep the venv's Python; an overlay on ``/etc``), mounts proc, sysfs, devtmpfs and
configfs, and chroots into it: the guest then runs the very binaries and venv the host has.
A checkout (or its venv) under one of the tmpfs places, as a fresh ``git clone`` in /tmp
is, would be hidden by the tmpfs: the guest binds it from the 9p root before the tmpfs
mounts and back onto the same path after them (:func:`covered_paths`, ``/binds``).
The initramfs only carries busybox, the modules (loaded before the chroot, since the host
has none for this kernel) and /init; it is cached beside the other guest's. iSCSI LUNs of a
host target can be attached as in the busybox guest (``boot_hostroot(..., luns=...)``),
named ``/dev/e2e/<i>-sg|nst|sch`` by the same /init snippet (guest.NAME_LUNS).

Networking, when a test asks for it: QEMU user networking (the guest is 10.0.2.15, its
ports forwarded to the host's 127.0.0.1) lets the host's own initiators reach the guest's
kernel iSCSI target. Host actions: the guest prints ``@@HOST name@@`` and waits
(``python3 /tmp/host-wait.py``) until the host has run ``host_actions[name]()`` and says so
over a forwarded port, so host-side checks happen at a fixed point of the guest's script.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .guest import CACHE, NAME_LUNS, CpioWriter, Guest, fetch_kernel, pack_base
from .qemu import Lun, Run, boot
from .targets import free_port

COVERED = ("/tmp", "/run", "/var/tmp")  # tmpfs in the guest (INIT)

# iscsi_target_mod with crc32c_generic, which it asks for by name at each login (the chroot
# has no modules for this kernel, so nothing would load it on demand).
# virtio_scsi for the iSCSI LUNs qemu attaches (boot_hostroot's ``luns``).
MODULES = ("virtio_pci", "9p", "9pnet_virtio", "scsi_mod", "virtio_scsi", "st", "ch", "sg",
           "configfs", "target_core_mod", "target_core_user", "uio", "tcm_loop", "crc32c_generic",
           "iscsi_target_mod", "overlay", "virtio_net")
HOST_DONE_PORT = 7009  # the guest's port where the host says "done" (host-wait.py)

HOST_WAIT = """import socket, sys
s = socket.create_server(("0.0.0.0", HOST_DONE_PORT))
s.settimeout(float(sys.argv[1]) if len(sys.argv) > 1 else 300)
c, _ = s.accept()
c.sendall(b"ok")
print("host done")
""".replace("HOST_DONE_PORT", str(HOST_DONE_PORT))

# The host's root, read-only, as the 9p share /init mounts.
VIRTFS = ("-virtfs",
          "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /host
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "@@E2E-INIT@@ $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /etc/modules.load); do
  insmod /lib/modules/$m.ko || echo "@@E2E-WARN insmod $m failed@@"
done
""" + NAME_LUNS + r"""mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \
  || echo "@@E2E-WARN 9p mount failed@@"
for d in proc sys dev; do mount --move /$d /host/$d 2>/dev/null || mount -t $d $d /host/$d; done
mount -t configfs configfs /host/sys/kernel/config
# the checkout and its venv where the tmpfs below would hide them: bound aside, then back
n=0; while read -r p; do mkdir -p /stash/$n && mount --bind "/host$p" /stash/$n; n=$((n+1)); done </binds
for d in tmp run var/tmp; do mount -t tmpfs -o size=256m tmpfs /host/$d; done
n=0; while read -r p; do mkdir -p "/host$p" && mount --bind /stash/$n "/host$p" \
  || echo "@@E2E-WARN bind $p failed@@"; n=$((n+1)); done </binds
# POSIX shared memory (shm_open), as on any Linux system: Amanda's taper needs it
mkdir -p /host/dev/shm && mount -t tmpfs -o size=64m tmpfs /host/dev/shm
# /etc writable too (rtslib wants /etc/target, as targetcli-fb's package makes it)
mkdir -p /ovl && mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/up /ovl/work
mount -t overlay overlay -o lowerdir=/host/etc,upperdir=/ovl/up,workdir=/ovl/work /host/etc \
  || echo "@@E2E-WARN overlay on /etc failed@@"
cp /test.sh /etc/e2e-lib.sh /host-wait.py /host/tmp/
ip link set lo up
if [ -e /host/sys/class/net/eth0 ]; then  # (sysfs moved into /host above)
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || echo "@@E2E-WARN eth0 failed@@"
fi
echo "@@E2E-READY@@"
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
  PYTHONDONTWRITEBYTECODE=1 /bin/sh -c 'cd /tmp && . /tmp/e2e-lib.sh && . /tmp/test.sh'
echo "@@E2E-DONE@@"
sync
poweroff -f
"""


def covered_paths() -> list[str]:
    """This checkout and the venv running the tests, where they lie under a place the guest
    covers with tmpfs (COVERED); nested ones are left out, their outer path brings them."""
    here = {Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(),
            Path(sys.base_prefix).resolve()}
    under = sorted(str(p) for p in here
                   if any(str(p).startswith(d + "/") for d in COVERED))
    return [p for p in under if not any(p.startswith(q + "/") for q in under)]


def build_hostroot_guest() -> Guest:
    """Debian's kernel and the (cached) initramfs that chroots into the host's root."""
    CACHE.mkdir(parents=True, exist_ok=True)
    kroot, release = fetch_kernel()
    out = CACHE / f"hostroot-{release}.cpio.gz"
    stamp = hashlib.sha256(Path(__file__).read_bytes()
                           + Path(pack_base.__code__.co_filename).read_bytes()).hexdigest()[:16]
    if not out.exists() or out.with_suffix(".key").read_text() != stamp:
        cpio = CpioWriter()
        for d in ("dev", "proc", "sys", "host", "bin", "etc", "lib/modules"):
            cpio.mkdir(d)
        pack_base(cpio, INIT, kroot / "lib" / "modules" / release, MODULES)
        out.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
        out.with_suffix(".key").write_text(stamp)
    kernel = kroot / "boot" / f"vmlinuz-{release}"
    return Guest(kernel=kernel, initrd=out, kernel_version=release, qemu_args=VIRTFS)


def _tell_guest(port: int, deadline: float) -> None:
    """Connect to the guest's host-wait.py through its forwarded port until it answers (the
    forward accepts on the host before the guest listens, then closes: try again)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                if c.recv(2) == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)


def boot_hostroot(guest: Guest, script: str, *, luns: Sequence[Lun] = (),
                  timeout: float = 400, memory_mb: int = 1024,
                  forwards: dict[int, int] | None = None,
                  host_actions: dict[str, Callable[[], object]] | None = None) -> Run:
    """Boot once and run ``script`` (sh, using ``step``) in the chroot of the host's root.

    ``luns`` are attached as in :func:`qemu.boot` and named ``/dev/e2e/<i>-sg|nst|sch``
    before the chroot (its /dev is the same devtmpfs). ``forwards`` maps host ports (on
    127.0.0.1) to guest ports; with it, or with ``host_actions``, the guest gets a network.
    ``host_actions[name]()`` runs on the host when the guest prints ``@@HOST name@@``; the
    guest waits for it with ``python3 /tmp/host-wait.py``; a failed action goes into the
    run's context instead of ending the boot."""
    binds = "".join(p + "\n" for p in covered_paths()).encode()
    files = {"binds": binds, "host-wait.py": HOST_WAIT.encode()}
    actions = dict(host_actions or {})
    failed: list[str] = []
    if forwards or actions:
        ports = dict(forwards or {})
        done_port = free_port()
        ports[done_port] = HOST_DONE_PORT
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in ports.items())
        guest = dataclasses.replace(guest, qemu_args=guest.qemu_args + (
            "-netdev", f"user,id=n0,restrict=on{fwd}", "-device", "virtio-net-pci,netdev=n0"))
        for name, action in actions.items():
            def then_tell(name=name, action=action) -> None:
                try:
                    action()
                except Exception as e:  # any failure: into the context, the guest goes on
                    failed.append(f"host action {name} failed: {type(e).__name__}: {e}")
                finally:
                    _tell_guest(done_port, time.monotonic() + 60)
            actions[name] = then_tell
    run = boot(guest, script, list(luns), timeout=timeout, memory_mb=memory_mb,
               files=files, host_actions=actions)
    run.context += "".join(f"\n--- {f}" for f in failed)
    return run
