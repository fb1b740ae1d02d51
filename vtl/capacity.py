"""Capacity totals of the library and of each pool, from the media catalog alone: what
``vtl status``, the status page and ``/metrics`` show.

``used`` is what the cartridges' medium holds (compressed, as a drive's capacity counts it),
``free`` what is left to their native capacity; cartridges outside the library (the vault)
are counted apart. ``written`` is what hosts wrote (native bytes, before compression) and
``compression_ratio`` written / used, over the cartridges whose native bytes the catalog has
counted (each is counted when it is next unmounted, verified or adopted; ``uncounted`` says
how many are not yet; the ratio is None when none holds counted data).
"""

from __future__ import annotations

from typing import Any


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    capacity = sum(r["capacity"] for r in rows)
    used = sum(min(r["used_bytes"], r["capacity"]) for r in rows)
    counted = [r for r in rows if r.get("native_bytes") is not None]
    written = sum(r["native_bytes"] for r in counted)
    on_medium = sum(r["used_bytes"] for r in counted if r["native_bytes"])
    return {"cartridges": len(rows), "capacity": capacity, "used": used,
            "free": capacity - used, "written": written,
            "compression_ratio": round(written / on_medium, 3) if on_medium else None,
            "uncounted": len(rows) - len(counted)}


def capacity_totals(cartridges: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"library": totals, "vault": totals, "pools": {pool: totals}}`` of catalog rows."""
    inside = [r for r in cartridges if r["address"] is not None]
    pools: dict[str, list[dict[str, Any]]] = {}
    for r in cartridges:
        pools.setdefault(r["pool"] or "-", []).append(r)
    return {"library": _totals(inside),
            "vault": _totals([r for r in cartridges if r["address"] is None]),
            "pools": {name: _totals(rows) for name, rows in sorted(pools.items())}}


def totals_line(name: str, t: dict[str, Any]) -> str:
    """``library: 3 cartridge(s), 1.0 GiB used, 7.0 GiB free of 8.0 GiB; 2.0 GiB written,
    compression 2.00:1``, as ``vtl status`` prints it."""
    from vtl.cli.formatting import human_size as size

    line = (f"{name}: {t['cartridges']} cartridge(s), {size(t['used'])} used, "
            f"{size(t['free'])} free of {size(t['capacity'])}")
    if t["compression_ratio"] is not None:
        line += f"; {size(t['written'])} written, compression {t['compression_ratio']:.2f}:1"
    if t["uncounted"]:
        line += f" ({t['uncounted']} not yet counted)"
    return line
