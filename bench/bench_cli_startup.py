"""Start-up time of the two CLIs against the interpreter itself, best of N runs.

    .venv/bin/python bench/bench_cli_startup.py [--runs 10]

Prints, per command, the best wall time and the best CPU time (user + system, which a busy
machine disturbs less than wall time) of ``--runs`` runs, and the ratio to the peers measured
in the same run: ``python -c pass`` (the floor: interpreter and site start-up) and ``python -c
"import typer"`` (the CLI framework both commands are built on). The goal is 0.2 s wall on a
quiet machine for ``--help`` and the listings. The listings run on a small library made in a
temporary directory. Bytecode is cached as an installed package has it (the warm-up run
writes the .pyc files even where ``PYTHONDONTWRITEBYTECODE`` is set, which would otherwise
compile every module of ours at every start). ``--importtime`` also prints the ten slowest imports of ``vtl --help``
(``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(argv: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def best(argv: list[str], runs: int) -> tuple[float, float]:
    _run(argv)  # warm the page cache and the .pyc files
    results = [_run(argv) for _ in range(runs)]
    return min(w for w, _ in results), min(c for _, c in results)


def _library(tmp: Path) -> Path:
    root = tmp / "lib"
    vtl = str(BIN / "vtl")
    for args in (["init", "--drives", "2", "--slots", "8"],
                 ["cartridge", "create", "A00001L8-A00004L8"]):
        subprocess.run([vtl, "--root", str(root), *args], check=True, capture_output=True)
    return root


def slowest_imports(argv: list[str], most: int = 10) -> list[tuple[int, str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        f"import sys; sys.argv = {argv!r}; from vtl.cli.main import app; app()"],
                       capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")  # "import time: SELF | CUMULATIVE | NAME"
        self_us = parts[0].rpartition(":")[2].strip()
        if len(parts) == 3 and self_us.isdigit():
            rows.append((int(self_us), parts[2].strip()))
    return sorted(rows, reverse=True)[:most]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = str(_library(Path(tmp)))
        os.environ["VTL_ROOT"] = root
        # as installed: the first (warm-up) run writes the .pyc files the others load
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        cases = {
            "python -c pass (peer)": [py, "-c", "pass"],
            "python -c 'import typer' (peer)": [py, "-c", "import typer"],
            "vtl --help": [str(BIN / "vtl"), "--help"],
            "ebm --help": [str(BIN / "ebm"), "--help"],
            "vtl cartridge list": [str(BIN / "vtl"), "cartridge", "list"],
            "vtl status": [str(BIN / "vtl"), "status"],
            "vtl pool list": [str(BIN / "vtl"), "pool", "list"],
            "ebm list": [str(BIN / "ebm"), "list"],
        }
        floor = None
        print(f"best of {args.runs} runs; load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':34} {'wall s':>7} {'cpu s':>7} {'wall/pass':>9} {'goal 0.2 s':>10}")
        for name, argv in cases.items():
            wall, cpu = best(argv, args.runs)
            floor = floor or wall
            goal = "" if "peer" in name else ("met" if wall < 0.2 else "missed")
            print(f"{name:34} {wall:7.3f} {cpu:7.3f} {wall / floor:9.1f} {goal:>10}")
    if args.importtime:
        print("slowest imports of vtl --help (self time, microseconds):")
        for us, name in slowest_imports(["vtl", "--help"]):
            print(f"  {us:8d} {name}")


if __name__ == "__main__":
    main()
