"""Capacity totals of the library and of each pool, from the media catalog alone: what
``vtl status``, the status page and ``/metrics`` show.

``used`` is what the cartridges' medium holds (compressed, as a drive's capacity counts it),
``free`` what is left to their native capacity; cartridges outside the library (the vault)
are counted apart.
"""

from __future__ import annotations

from typing import Any


def _totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    capacity = sum(r["capacity"] for r in rows)
    used = sum(min(r["used_bytes"], r["capacity"]) for r in rows)
    return {"cartridges": len(rows), "capacity": capacity, "used": used,
            "free": capacity - used}


def capacity_totals(cartridges: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"library": totals, "vault": totals, "pools": {pool: totals}}`` of catalog rows."""
    inside = [r for r in cartridges if r["address"] is not None]
    pools: dict[str, list[dict[str, Any]]] = {}
    for r in cartridges:
        pools.setdefault(r["pool"] or "-", []).append(r)
    return {"library": _totals(inside),
            "vault": _totals([r for r in cartridges if r["address"] is None]),
            "pools": {name: _totals(rows) for name, rows in sorted(pools.items())}}
