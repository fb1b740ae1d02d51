"""Plain-text tables for the listings of both CLIs (``vtl status``, ``vtl cartridge list``,
``vtl pool list``, ``vtl events``, ``ebm list``, ``ebm dataset list`` ...).

Why not rich's Table: importing rich costs a listing about a third of its start-up (its
console, text and emoji modules), and a listing should start as fast as ``--help``. These
tables are what ``mtx status`` or ``restic snapshots`` print: a header, one line per row,
columns padded with spaces, nothing to strip before ``grep`` or ``awk`` (``--json`` is still
the form for scripts). The interface is the part of rich's that the listings used:
``Table(*columns, title=...)``, ``add_column``, ``add_row``, then ``print()``.
"""

from __future__ import annotations

import sys
from typing import Any

GAP = "  "


class Table:
    def __init__(self, *columns: str, title: str | None = None, show_header: bool = True) -> None:
        self.columns = list(columns)
        self.title = title
        self.show_header = show_header
        self.rows: list[list[str]] = []

    def add_column(self, name: str) -> None:
        self.columns.append(name)

    def add_row(self, *cells: Any) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def lines(self) -> list[str]:
        """The title, the header and the rows, each column as wide as its widest cell; the
        last column is not padded (no trailing blanks)."""
        shown = ([self.columns] if self.show_header and self.columns else []) + self.rows
        if not shown:
            return [self.title] if self.title else []
        ncols = max(len(r) for r in shown)
        widths = [max(len(r[i]) for r in shown if i < len(r)) for i in range(ncols)]
        out = [self.title] if self.title else []
        for r in shown:
            cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
            out.append(GAP.join(cells).rstrip())
        return out

    def print(self) -> None:
        text = "\n".join(self.lines())
        if text:
            sys.stdout.write(text + "\n")
