"""Guest script fragments and output parsers shared by the e2e tests.

The same multi-file tar round trip runs against tgt (proving the harness) and against
`vtl serve` (proving our target), so both say the same thing about "behaves like a drive".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .qemu import Run

# Needs `export TAPE=/dev/nstN` first (steps run in a child shell).
# Three tar archives (tape files 0, 1, 2) of three random files each, 64 KiB tar records.
TAR_ROUNDTRIP = r"""
step tar_mk 'for d in a b c; do mkdir -p src/$d; for i in 1 2 3; do dd if=/dev/urandom of=src/$d/f$i bs=1k count=$((i*97+13)) 2>/dev/null || exit 1; done; done; cd src && sha256sum */* > ../sums && cat ../sums'
step tar_write 'mt -f $TAPE rewind && for d in a b c; do tar -cf $TAPE -b 128 -C src $d || exit 1; mt -f $TAPE status | grep "File number" || exit 1; done'
step tar_weof 'mt -f $TAPE weof && mt -f $TAPE status'
step tar_rewind 'mt -f $TAPE rewind && mt -f $TAPE status'
step tar_fsf1 'mt -f $TAPE fsf 1 && mt -f $TAPE status'
step tar_read_b 'mkdir -p out && tar -xvf $TAPE -b 128 -C out'
step tar_list_a 'mt -f $TAPE rewind && tar -tf $TAPE -b 128'
step tar_fsf2 'mt -f $TAPE rewind && mt -f $TAPE fsf 2 && mt -f $TAPE status && tar -xvf $TAPE -b 128 -C out'
step tar_read_a 'mt -f $TAPE rewind && tar -xf $TAPE -b 128 -C out && mt -f $TAPE status'
step tar_verify 'cd out && sha256sum -c ../sums'
"""


@dataclass(frozen=True)
class MtStatus:
    file: int
    block: int
    block_size: int
    density: int
    flags: frozenset[str]


def mt_status(text: str) -> MtStatus:
    """Parses `mt status` (mt-st) output; the last status block in ``text`` wins."""
    pos = re.findall(r"File number=(-?\d+), block number=(-?\d+)", text)
    size = re.findall(r"Tape block size (\d+) bytes\. Density code (0x[0-9a-fA-F]+)", text)
    bits = re.findall(r"General status bits on \([0-9a-fA-F]+\):\n\s*(.*)", text)
    assert pos and size and bits, f"not mt status output:\n{text}"
    return MtStatus(
        file=int(pos[-1][0]),
        block=int(pos[-1][1]),
        block_size=int(size[-1][0]),
        density=int(size[-1][1], 16),
        flags=frozenset(bits[-1].split()),
    )


def check_tar_roundtrip(run: Run) -> None:
    """Asserts on every step of TAR_ROUNDTRIP (the serial log goes into any failure)."""
    sums = run.ok("tar_mk")
    files = sorted(line.split()[1] for line in sums.splitlines() if line.strip())
    assert len(files) == 9, run.describe()
    written = re.findall(r"File number=(\d+), block number=(\d+)", run.ok("tar_write"))
    assert written == [("1", "0"), ("2", "0"), ("3", "0")], run.describe()
    st = mt_status(run.ok("tar_weof"))
    assert (st.file, st.block) == (4, 0), run.describe()
    st = mt_status(run.ok("tar_rewind"))
    assert (st.file, st.block) == (0, 0) and "BOT" in st.flags, run.describe()
    st = mt_status(run.ok("tar_fsf1"))
    assert (st.file, st.block) == (1, 0) and "BOT" not in st.flags, run.describe()
    assert sorted(run.ok("tar_read_b").split()) == ["b/", "b/f1", "b/f2", "b/f3"], run.describe()
    assert sorted(run.ok("tar_list_a").split()) == ["a/", "a/f1", "a/f2", "a/f3"], run.describe()
    out = run.ok("tar_fsf2")
    st = mt_status(out)
    assert (st.file, st.block) == (2, 0), run.describe()
    assert {"c/f1", "c/f2", "c/f3"} <= set(out.split()), run.describe()
    st = mt_status(run.ok("tar_read_a"))
    assert st.file == 0, run.describe()
    verified = run.ok("tar_verify")
    assert verified.count(": OK") == 9, run.describe()


@dataclass(frozen=True)
class MtxElement:
    full: bool
    tag: str | None
    source: int | None = None  # for a drive: the storage element it was loaded from


@dataclass(frozen=True)
class MtxStatus:
    drives: dict[int, MtxElement]
    slots: dict[int, MtxElement]
    import_export: frozenset[int]
    header: str


def mtx_status(text: str) -> MtxStatus:
    """Parses `mtx status`: drives, storage elements (with volume tags) and mailslots."""
    header = next((ln.strip() for ln in text.splitlines() if "Storage Changer" in ln), "")
    assert header, f"not mtx status output:\n{text}"
    drives: dict[int, MtxElement] = {}
    for m in re.finditer(
        r"Data Transfer Element (\d+):(Full|Empty)"
        r"(?: \((?:Storage Element (\d+)|Unknown Storage Element) Loaded\))?"
        r"(?::VolumeTag ?= ?(\S+))?",
        text,
    ):
        drives[int(m.group(1))] = MtxElement(
            m.group(2) == "Full", m.group(4), int(m.group(3)) if m.group(3) else None
        )
    slots: dict[int, MtxElement] = {}
    ie: set[int] = set()
    for m in re.finditer(
        r"Storage Element (\d+)( IMPORT/EXPORT)?:(Full|Empty)(?: ?:VolumeTag ?= ?(\S+))?", text
    ):
        n = int(m.group(1))
        slots[n] = MtxElement(m.group(3) == "Full", m.group(4))
        if m.group(2):
            ie.add(n)
    return MtxStatus(drives, slots, frozenset(ie), header)


def mt_tell(text: str) -> list[int]:
    """Every block number `mt tell` printed ("At block N.") in order."""
    return [int(x) for x in re.findall(r"At block (\d+)\.", text)]


def mode_page_bytes(text: str, title: str) -> list[int]:
    """The first hex dump line of the mode page whose `sg_modes` title contains ``title``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if title.lower() in line.lower():
            for dump in lines[i + 1 :]:
                parts = dump.split()
                if parts and parts[0] == "00":
                    return [int(b, 16) for b in parts[1:]]
    raise AssertionError(f"no {title!r} mode page in:\n{text}")
