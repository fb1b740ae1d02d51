#!/usr/bin/env python3
"""Commands per second and MB/s through the kernel's LIO target (TCMU ring) against ``vtl
serve``, in one guest boot, with the same client: the ratio LIO / vtl serve.

Why this exists: issue 13 asks what the LIO export costs or gains per command against the
userspace iSCSI target. This machine's kernel has no LIO, so the benchmark boots Debian's
kernel under qemu (TCG) with this machine's root, exactly as tests/e2e/test_linux_lio.py does
(tests/e2e/hostroot.py), and in that one guest runs:

1. ``vtl lio handler`` + ``vtl lio export --fabric loopback``: the drive is a local SCSI
   device through tcm_loop; the client sends SG_IO to its sg node (kernel SCSI midlayer ->
   tcm_loop -> LIO -> TCMU ring -> the handler's models);
2. the handler stopped, ``vtl serve`` on 127.0.0.1: the client is the project's iSCSI
   initiator over loopback TCP (ebm.remote.initiator -> vtl serve's models).

The client is tests/e2e/tape_io.py ``bench``: TEST UNIT READY for N seconds (commands/s),
then WRITE(6) of one block size for N seconds (at most 48 MiB) from BOT, a filemark at the
end (its sync included), at 64 KiB and 10 KiB. One command at a time, as st sends them.

Under TCG every guest instruction is emulated, so the absolute figures say nothing about
real hardware; the ratio says which path costs fewer guest instructions per command with
the same models behind it. See bench/README.md, "bench_lio.py".

Usage (from the repository root):
    .venv/bin/python bench/bench_lio.py              # 10 s per figure
    .venv/bin/python bench/bench_lio.py --seconds 5 --sizes 65536,10240 --json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.hostroot import boot_hostroot, build_hostroot_guest  # noqa: E402
from tests.e2e.qemu import qemu_available  # noqa: E402

VTL = Path(sys.executable).with_name("vtl")
TAPE_IO = REPO / "tests" / "e2e" / "tape_io.py"
IQN = "iqn.2026-01.org.vtl-ebm:vtl"

SCRIPT = r"""
V="VTL --root /tmp/lib"
step init "$V init --drives 1 --slots 4 --mailslots 1 >/dev/null && $V cartridge create A00001L8 --capacity 256MiB >/dev/null && echo ok"
setsid $V lio handler >/tmp/handler.log 2>&1 </dev/null & echo $! >/tmp/handler.pid
step export "for i in \$(seq 120); do grep -q ready /tmp/handler.log && break; sleep 1; done; $V lio export --fabric loopback >/dev/null && for i in \$(seq 120); do [ -e /dev/sch0 ] && [ -e /dev/nst0 ] && break; sleep 1; done; mtx -f /dev/sch0 load 1 0 && echo ok"
SG=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:1/scsi_generic/sg[0-9]* | head -1))
step lio "sg_turs $SG >/dev/null 2>&1; PY TAPE_IO sg:$SG bench 0 SECONDS SIZES"
step serve "kill \$(cat /tmp/handler.pid); for i in \$(seq 60); do kill -0 \$(cat /tmp/handler.pid) 2>/dev/null || break; sleep 1; done; setsid $V serve --portal 127.0.0.1:3261 >/tmp/serve.log 2>&1 </dev/null & for i in \$(seq 120); do iscsi-ls iscsi://127.0.0.1:3261 >/dev/null 2>&1 && break; sleep 1; done; PY TAPE_IO iscsi:127.0.0.1:3261/IQN bench 0 SECONDS SIZES"
"""


def measure(seconds: float, sizes: list[int]) -> dict[str, dict[str, float]]:
    """One boot; the client's JSON line for each way in."""
    script = (SCRIPT.replace("VTL", str(VTL)).replace("TAPE_IO", str(TAPE_IO))
              .replace("PY", sys.executable).replace("IQN", IQN)
              .replace("SECONDS", str(seconds)).replace("SIZES", " ".join(map(str, sizes))))
    run = boot_hostroot(build_hostroot_guest(), script, timeout=900)
    out = {}
    for name in ("lio", "serve"):
        figures = re.findall(r"^\{.*\}$", run.ok(name), flags=re.M)
        if not figures:
            raise SystemExit(f"bench_lio: no figures from the {name} run\n{run.describe()}")
        out[name] = json.loads(figures[-1])
    return out


def report(result: dict[str, dict[str, float]], sizes: list[int]) -> str:
    lio, serve = result["lio"], result["serve"]
    rows = [("TEST UNIT READY, commands/s", "tur_per_s")]
    for size in sizes:
        rows.append((f"WRITE {size // 1024} KiB, commands/s", f"write_{size}_per_s"))
        rows.append((f"WRITE {size // 1024} KiB, MB/s", f"write_{size}_mb_s"))
    lines = [f"{'':32} {'LIO (tcm_loop)':>15} {'vtl serve':>10} {'LIO/serve':>10}"]
    for label, key in rows:
        lines.append(f"{label:32} {lio[key]:15.1f} {serve[key]:10.1f} "
                     f"{lio[key] / serve[key]:10.2f}")
    lines.append("(one guest under qemu TCG: absolute figures are emulation speed; "
                 "the ratio is the comparison)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per figure (default 10)")
    ap.add_argument("--sizes", default="65536,10240", help="WRITE block sizes in bytes")
    ap.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    args = ap.parse_args()
    reason = qemu_available()
    if reason or not VTL.exists():
        print(f"bench_lio: cannot run: {reason or f'no {VTL}'}", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    result = measure(args.seconds, sizes)
    print(json.dumps(result, indent=2) if args.json else report(result, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
