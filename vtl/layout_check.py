"""A library.toml whose layout no longer holds the cartridges placed in it is refused.

Shrinking ``slots`` (or ``drives``, ``mailslots``, or moving an address base) under
cartridges would leave them at addresses the changer no longer has: invisible to initiators
and to ``vtl status``, unreachable by ``move``. Rather than orphan them silently, opening the
library fails with one line naming them and the smallest layout that still holds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtl.config import CONFIG_NAME, ConfigFileError

if TYPE_CHECKING:
    from vtl.library import Library


def orphans(lib: Library) -> list[tuple[str, int]]:
    """(barcode, address) of every cartridge at an address the layout does not have."""
    known = [(base, base + count) for _etype, base, count in lib._ranges()]
    return sorted((row["barcode"], address) for address, row in lib._placement.items()
                  if not any(lo <= address < hi for lo, hi in known))


def check(lib: Library) -> None:
    """ConfigFileError when cartridges sit outside the configured elements."""
    lost = orphans(lib)
    if not lost:
        return
    c = lib.config
    needed = max(address for _bc, address in lost)
    hint = ""
    if needed >= c.slot_base:
        hint = f"; slots must be at least {needed - c.slot_base + 1}"
    names = ", ".join(f"{bc} (address {a})" for bc, a in lost[:3])
    more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
    raise ConfigFileError(
        f"{lib.root / CONFIG_NAME}: its layout (drives {c.drives}, slots {c.slots}, "
        f"mailslots {c.mailslots}) has no element for cartridge(s) {names}{more}{hint}; "
        "put the old values back (move or export the cartridges before shrinking)")
