"""``iscsi://HOST[:PORT]/IQN[/LUN]``: where a remote library or one of its devices is.

The LUN is optional: a library URL names the target, whose LUN 0 is the changer (as `vtl
serve` and most libraries export it) and whose drives are found from REPORT LUNS; a drive URL
names its LUN. IPv6 hosts go in brackets (``iscsi://[::1]:3260/...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORT = 3260
_URL = re.compile(r"^iscsi://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(?::(?P<port>\d{1,5}))?"
                  r"/(?P<iqn>[^/]+)(?:/(?P<lun>\d{1,5}))?/?$")


class UrlError(ValueError):
    """A malformed iSCSI URL (one line, names the URL)."""


@dataclass(frozen=True, slots=True)
class IscsiUrl:
    host: str
    port: int
    iqn: str
    lun: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        lun = "" if self.lun is None else f"/{self.lun}"
        return f"iscsi://{host}:{self.port}/{self.iqn}{lun}"


def parse_url(url: str) -> IscsiUrl:
    m = _URL.match(url)
    if m is None:
        raise UrlError(f"not an iSCSI URL (iscsi://HOST[:PORT]/IQN[/LUN]): {url!r}")
    port = int(m["port"]) if m["port"] else DEFAULT_PORT
    if not 0 < port < 65536:
        raise UrlError(f"bad port in {url!r}")
    iqn = m["iqn"]
    if not re.match(r"^(iqn\.\d{4}-\d{2}\.\S+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]+)$", iqn):
        raise UrlError(f"bad target name {iqn!r} in {url!r}")
    lun = int(m["lun"]) if m["lun"] is not None else None
    if lun is not None and lun > 16383:
        raise UrlError(f"LUN {lun} out of range in {url!r}")
    return IscsiUrl(m["host"].strip("[]"), port, iqn, lun)


def is_iscsi_url(text: str) -> bool:
    return text.startswith("iscsi://")
